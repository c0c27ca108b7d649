//! user_data encoding: which operation a completion is for, and for which connection.

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
}

/// Generations wrap within the bits a `duet_engine::ConnId` gives them.
pub(super) const GEN_MASK: u32 = (1 << duet_engine::GENERATION_BITS) - 1;

/// user_data: op (8 bits) | generation (24 bits) | slot (32 bits). A completion whose
/// generation differs from its slot's belongs to a connection that is gone.
pub(super) fn token(op: Op, slot: u32, gen: u32) -> u64 {
    ((op as u64) << 56) | (((gen & GEN_MASK) as u64) << 32) | slot as u64
}

/// The op, slot and generation of a user_data (`None`: not ours).
pub(super) fn decode(user_data: u64) -> (Option<Op>, u32, u32) {
    let op = match (user_data >> 56) as u8 {
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
        _ => None,
    };
    (op, user_data as u32, ((user_data >> 32) as u32) & GEN_MASK)
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
        ];
        for op in ops {
            for (slot, gen) in [(0, 0), (1, 7), (u32::MAX, GEN_MASK), (123_456, 0x12_3456)] {
                assert_eq!(decode(token(op, slot, gen)), (Some(op), slot, gen));
            }
        }
        // A generation wraps within its 24 bits.
        assert_eq!(decode(token(Op::Recv, 5, GEN_MASK + 1)), (Some(Op::Recv), 5, 0));
        assert_eq!(decode(0).0, None);
    }
}
