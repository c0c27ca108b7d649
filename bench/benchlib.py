"""Helpers shared by the measurement scripts in bench/."""
import socket, time


def wait_port(port, timeout=60):
    """True once 127.0.0.1:port accepts a connection, False after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False
