//! user_data encoding: which operation a completion is for, and for which connection.
//! A completion's user_data is decoded once, into a [`Token`] (`TryFrom<u64>`), and
//! matched on afterwards.

use duet_engine::ConnId;

/// What a completion is for; the top byte of its user_data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// A cancellation issued for one connection (counted in its operations).
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
    /// A one-shot poll for writability (the socket was full for `sendfile`).
    PollOut = 15,
    /// A direct descriptor's process fd installed (for `sendfile`).
    InstallFd = 16,
    /// A splice of a file into the connection's pipe.
    SpliceIn = 17,
    /// A splice from that pipe to the socket.
    SpliceOut = 18,
}

impl Op {
    /// Every op, each at the index of its code minus one (a test checks it): decoding
    /// is a lookup, not a hand-repeated match.
    const ALL: [Op; 18] = [
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
        Op::PollOut,
        Op::InstallFd,
        Op::SpliceIn,
        Op::SpliceOut,
    ];
}

/// A user_data whose top byte is no [`Op`]: not an operation of this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Foreign;

impl TryFrom<u8> for Op {
    type Error = Foreign;

    #[inline]
    fn try_from(code: u8) -> Result<Op, Foreign> {
        Op::ALL.get(usize::from(code).wrapping_sub(1)).copied().ok_or(Foreign)
    }
}

/// Bits of the user_data below the op: a connection's [`ConnId::token`], or zero.
const OP_SHIFT: u32 = duet_engine::TOKEN_BITS;

/// What a completion is for: its op, and its connection (for a loop operation, the
/// zero id, which no lookup finds live). A completion whose id is stale in the slab
/// belongs to a connection that is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) op: Op,
    pub(super) id: ConnId,
}

impl Token {
    /// The token of connection `id`'s operation `op`.
    #[inline]
    pub(super) fn conn(op: Op, id: ConnId) -> Token {
        Token { op, id }
    }

    /// The token of an operation that belongs to the loop, not to a connection.
    #[inline]
    pub(super) fn of_loop(op: Op) -> Token {
        Token { op, id: ConnId { index: 0, generation: 0 } }
    }

    /// user_data: op (top 8 bits) | the connection's [`ConnId::token`].
    #[inline]
    pub(super) fn user_data(self) -> u64 {
        ((self.op as u64) << OP_SHIFT) | self.id.token()
    }
}

impl TryFrom<u64> for Token {
    type Error = Foreign;

    #[inline]
    fn try_from(user_data: u64) -> Result<Token, Foreign> {
        let op = Op::try_from((user_data >> OP_SHIFT) as u8)?;
        Ok(Token { op, id: ConnId::from_token(user_data) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_op_decodes_from_its_own_code() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i + 1, "{op:?} is out of place in Op::ALL");
            assert_eq!(Op::try_from(op as u8), Ok(op));
        }
        assert_eq!(Op::try_from(0), Err(Foreign));
        assert_eq!(Op::try_from(Op::ALL.len() as u8 + 1), Err(Foreign));
    }

    #[test]
    fn user_data_round_trips_op_index_and_generation() {
        let max_generation = (1 << duet_engine::GENERATION_BITS) - 1;
        for op in Op::ALL {
            for (index, generation) in [(0, 0), (1, 7), (u32::MAX, max_generation), (123_456, 0x12_3456)] {
                let token = Token::conn(op, ConnId { index, generation });
                assert_eq!(Token::try_from(token.user_data()), Ok(token));
            }
            let token = Token::of_loop(op);
            assert_eq!(Token::try_from(token.user_data()), Ok(token));
        }
        assert_eq!(Token::try_from(0), Err(Foreign));
    }
}
