//! The connection slab: slots reused through a free list, each with a generation so a
//! stale reference (an event, a completion or a deadline for a connection that is
//! gone) is recognised instead of reaching the connection now in that slot.

/// Bits of a generation. 24, so a [`ConnId`] fits in the low 56 bits of a token and a
/// completion engine keeps the top byte for its operation code.
pub const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;
/// Bits of a token a [`ConnId`] occupies (the rest are zero and free for the engine).
pub const TOKEN_BITS: u32 = 32 + GENERATION_BITS;

/// A connection: its slot and the generation of that slot when it was inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The slot.
    pub index: u32,
    /// The slot's generation (wraps within [`GENERATION_BITS`]).
    pub generation: u32,
}

impl ConnId {
    /// The id in the low [`TOKEN_BITS`] bits of a `u64` (an epoll event's data, an
    /// io_uring user_data): generation above index.
    #[inline]
    pub fn token(self) -> u64 {
        ((self.generation & GENERATION_MASK) as u64) << 32 | self.index as u64
    }

    /// The id in the low [`TOKEN_BITS`] bits of `token` (higher bits are ignored).
    #[inline]
    pub fn from_token(token: u64) -> ConnId {
        ConnId { index: token as u32, generation: (token >> 32) as u32 & GENERATION_MASK }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Values of type `T` addressed by generation-checked [`ConnId`]s.
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id the next [`Slab::insert`] returns (for a registration that must name the
    /// connection before it exists).
    pub fn next_id(&self) -> ConnId {
        match self.free.last() {
            Some(&index) => ConnId { index, generation: self.slots[index as usize].generation },
            None => ConnId { index: self.slots.len() as u32, generation: 0 },
        }
    }

    /// Stores `value` in a free slot and returns its id.
    pub fn insert(&mut self, value: T) -> ConnId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot { generation: 0, value: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        debug_assert!(slot.value.is_none());
        slot.value = Some(value);
        self.len += 1;
        ConnId { index, generation: slot.generation }
    }

    /// The value of `id`, if it is still there.
    #[inline]
    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.slots.get(id.index as usize).filter(|s| s.generation == id.generation)?.value.as_ref()
    }

    /// The value of `id`, if it is still there.
    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.slots.get_mut(id.index as usize).filter(|s| s.generation == id.generation)?.value.as_mut()
    }

    /// Takes the value of `id` out and retires the id: the slot's generation moves on,
    /// so every reference to `id` still around is stale from now on.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize).filter(|s| s.generation == id.generation)?;
        let value = slot.value.take()?;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids of every stored value, for walks that change the slab as they go
    /// (draining, closing everything): collect first, then visit each id.
    pub fn ids(&self) -> Vec<ConnId> {
        let live = self.slots.iter().enumerate().filter(|(_, s)| s.value.is_some());
        live.map(|(i, s)| ConnId { index: i as u32, generation: s.generation }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_id_is_stale_even_after_its_slot_is_reused() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!((slab.get(a), slab.get(b), slab.len()), (Some(&"a"), Some(&"b"), 2));
        assert_eq!(slab.next_id(), ConnId { index: 2, generation: 0 });
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None, "removed twice");
        let next = slab.next_id();
        let c = slab.insert("c");
        assert_eq!(c, next);
        assert_eq!(c.index, a.index, "the free slot is reused");
        assert_ne!(c.generation, a.generation);
        assert_eq!(slab.get(a), None, "a stale id must not reach the new value");
        assert_eq!(slab.get_mut(a), None);
        assert_eq!(slab.get(c), Some(&"c"));
        let mut ids = slab.ids();
        ids.sort_by_key(|id| id.index);
        assert_eq!(ids, vec![c, b]);
    }

    #[test]
    fn generations_wrap_within_their_bits() {
        let mut slab = Slab::new();
        let mut id = slab.insert(0u8);
        for _ in 0..(1u32 << GENERATION_BITS) {
            slab.remove(id).expect("present");
            id = slab.insert(0);
        }
        assert_eq!(id, ConnId { index: 0, generation: 0 }, "wrapped back to 0");
    }

    #[test]
    fn tokens_round_trip_and_leave_the_top_byte_free() {
        for id in [
            ConnId { index: 0, generation: 0 },
            ConnId { index: 7, generation: 1 },
            ConnId { index: u32::MAX, generation: GENERATION_MASK },
            ConnId { index: 123_456, generation: 0x12_3456 },
        ] {
            let token = id.token();
            assert_eq!(token >> TOKEN_BITS, 0);
            assert_eq!(ConnId::from_token(token), id);
            assert_eq!(ConnId::from_token(token | 0xAB << TOKEN_BITS), id, "high bits are ignored");
        }
    }
}
