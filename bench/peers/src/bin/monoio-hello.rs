//! `Hello, World!` with a Date header on one monoio io_uring thread, heads parsed with
//! httparse; pipelined requests are answered in one write per read.
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

thread_local! {
    /// The second and its rendered Date line, rendered again when the second changes.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            d.0 = secs;
            d.1 = format!("Date: {}\r\n", httpdate::fmt_http_date(now)).into_bytes();
        }
        out.extend_from_slice(&d.1);
    });
}

async fn serve(mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            buf.reserve(len);
        }
        let (res, slice) = stream.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut used = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[used..]) {
                Ok(httparse::Status::Complete(n)) => {
                    used += n;
                    out.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\nServer: monoio\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n",
                    );
                    push_date(&mut out);
                    out.extend_from_slice(b"\r\nHello, World!");
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..used);
        if !out.is_empty() {
            let (res, o) = stream.write_all(out).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
    }
}

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(18091);
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(4096).build().expect("an io_uring runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(stream));
            }
        }
    });
}
