//! user_data encoding: which operation a completion is for, and for which connection.

use duet_engine::ConnId;

/// What a completion is for; the top byte of its user_data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// A cancellation issued for one connection (counted in its slot).
    Cancel = 4,
    Wake = 5,
    /// The loop's one timeout.
    Timer = 6,
    /// An update of that timeout.
    TimerUpdate = 7,
    /// A cancellation not tied to a connection (the accept, or everything at exit).
    Global = 8,
    /// A read of a streamed file into the connection's chunk buffer.
    FileRead = 9,
    /// The send of that chunk.
    FileSend = 10,
    /// A one-shot poll on the listener: wait until it is readable before accepting
    /// again (out of descriptors, see `duet_engine::accept`).
    AcceptPoll = 11,
    /// An unread-bytes check through the ring (direct descriptors).
    InputCheck = 12,
    /// A write-side shutdown through the ring (direct descriptors).
    Shutdown = 13,
    /// The close of a connection's table slot (the connection is gone by then).
    CloseDirect = 14,
}

/// Bits of the user_data below the op: a connection's [`ConnId::token`], or zero.
const OP_SHIFT: u32 = duet_engine::TOKEN_BITS;

/// user_data: op (top 8 bits) | the connection's [`ConnId::token`] (zero for loop
/// operations). A completion whose id is stale in the slab belongs to a connection that
/// is gone.
pub(super) fn token(op: Op, id: ConnId) -> u64 {
    ((op as u64) << OP_SHIFT) | id.token()
}

/// user_data for an operation that belongs to the loop, not to a connection.
pub(super) fn loop_token(op: Op) -> u64 {
    (op as u64) << OP_SHIFT
}

/// The op and connection of a user_data (`None`: not ours).
pub(super) fn decode(user_data: u64) -> (Option<Op>, ConnId) {
    let op = match (user_data >> OP_SHIFT) as u8 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Cancel),
        5 => Some(Op::Wake),
        6 => Some(Op::Timer),
        7 => Some(Op::TimerUpdate),
        8 => Some(Op::Global),
        9 => Some(Op::FileRead),
        10 => Some(Op::FileSend),
        11 => Some(Op::AcceptPoll),
        12 => Some(Op::InputCheck),
        13 => Some(Op::Shutdown),
        14 => Some(Op::CloseDirect),
        _ => None,
    };
    (op, ConnId::from_token(user_data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_op_slot_and_generation() {
        let ops = [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Cancel,
            Op::Wake,
            Op::Timer,
            Op::TimerUpdate,
            Op::Global,
            Op::FileRead,
            Op::FileSend,
            Op::AcceptPoll,
            Op::InputCheck,
            Op::Shutdown,
            Op::CloseDirect,
        ];
        let max_generation = (1 << duet_engine::GENERATION_BITS) - 1;
        for op in ops {
            for (index, generation) in [(0, 0), (1, 7), (u32::MAX, max_generation), (123_456, 0x12_3456)] {
                let id = ConnId { index, generation };
                assert_eq!(decode(token(op, id)), (Some(op), id));
            }
            assert_eq!(decode(loop_token(op)), (Some(op), ConnId { index: 0, generation: 0 }));
        }
        assert_eq!(decode(0).0, None);
    }
}
