//! The op table: every op's [`Lifecycle`] slot, found by the key its SQE carries as
//! `user_data`. A vector with a free list threaded through its vacant entries, like the `slab`
//! crate's, but specialised to the one value type so that the two per-op calls (take a slot at
//! submission, free it when the future takes the result) are inline and write no drop glue,
//! at about half the instructions of `slab`'s generic insert and remove.

use super::slot::Lifecycle;

enum Entry {
    /// Free; holds the next free key (`entries.len()` ends the list).
    Vacant(usize),
    Occupied(Lifecycle),
}

#[derive(Default)]
pub(crate) struct OpTable {
    entries: Vec<Entry>,
    /// The first free key; `entries.len()` when none is free.
    next_free: usize,
}

impl OpTable {
    pub(crate) fn with_capacity(cap: usize) -> OpTable {
        OpTable {
            entries: Vec::with_capacity(cap),
            next_free: 0,
        }
    }

    /// Stores `slot` under the most recently freed key (or a new one) and returns the key.
    #[inline]
    pub(crate) fn insert(&mut self, slot: Lifecycle) -> usize {
        let key = self.next_free;
        let Some(e) = self.entries.get_mut(key) else {
            return self.insert_new(slot);
        };
        let Entry::Vacant(next) = *e else {
            unreachable!("the free list only holds vacant entries")
        };
        self.next_free = next;
        // A vacant entry holds only a key: nothing to drop, so no drop glue is emitted.
        std::mem::forget(std::mem::replace(e, Entry::Occupied(slot)));
        key
    }

    /// [`insert`](OpTable::insert) when no key is free: the table grows. Out of line, since
    /// a busy loop reuses keys and the growth path would otherwise be inlined everywhere.
    #[cold]
    #[inline(never)]
    fn insert_new(&mut self, slot: Lifecycle) -> usize {
        let key = self.entries.len();
        self.entries.push(Entry::Occupied(slot));
        self.next_free = self.entries.len();
        key
    }

    #[inline]
    pub(crate) fn get(&self, key: usize) -> Option<&Lifecycle> {
        match self.entries.get(key) {
            Some(Entry::Occupied(s)) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Lifecycle> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(s)) => Some(s),
            _ => None,
        }
    }

    /// Frees `key` and returns what it held.
    ///
    /// # Panics
    ///
    /// If `key` holds nothing: every caller has just found the slot occupied.
    #[inline]
    pub(crate) fn remove(&mut self, key: usize) -> Lifecycle {
        let e = self.entries.get_mut(key).expect("op key out of range");
        match std::mem::replace(e, Entry::Vacant(self.next_free)) {
            Entry::Occupied(s) => {
                self.next_free = key;
                s
            }
            Entry::Vacant(next) => {
                *e = Entry::Vacant(next);
                panic!("op slot {key} freed twice");
            }
        }
    }

    /// Every occupied slot with its key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Lifecycle)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| match e {
                Entry::Occupied(s) => Some((k, s)),
                Entry::Vacant(_) => None,
            })
    }
}

impl std::ops::Index<usize> for OpTable {
    type Output = Lifecycle;
    fn index(&self, key: usize) -> &Lifecycle {
        self.get(key).expect("no op slot at this key")
    }
}

impl std::ops::IndexMut<usize> for OpTable {
    fn index_mut(&mut self, key: usize) -> &mut Lifecycle {
        self.get_mut(key).expect("no op slot at this key")
    }
}

#[cfg(test)]
mod tests {
    use super::OpTable;
    use crate::driver::slot::Lifecycle;

    fn keys(t: &OpTable) -> Vec<usize> {
        t.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn freed_keys_are_reused_last_freed_first() {
        let mut t = OpTable::with_capacity(2);
        let a = t.insert(Lifecycle::Abandoned);
        let b = t.insert(Lifecycle::Abandoned);
        let c = t.insert(Lifecycle::Abandoned);
        assert_eq!((a, b, c), (0, 1, 2));
        t.remove(a);
        t.remove(c);
        assert_eq!(keys(&t), [1]);
        assert_eq!(t.insert(Lifecycle::Abandoned), c);
        assert_eq!(t.insert(Lifecycle::Abandoned), a);
        assert_eq!(t.insert(Lifecycle::Abandoned), 3);
        assert_eq!(keys(&t), [0, 1, 2, 3]);
    }

    #[test]
    fn a_vacant_key_is_found_empty() {
        let mut t = OpTable::with_capacity(1);
        let k = t.insert(Lifecycle::Abandoned);
        assert!(t.get(k).is_some());
        t.remove(k);
        assert!(t.get(k).is_none());
        assert!(t.get_mut(k).is_none());
        assert!(t.get(k + 5).is_none());
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn freeing_a_vacant_key_panics() {
        let mut t = OpTable::with_capacity(1);
        let k = t.insert(Lifecycle::Abandoned);
        t.insert(Lifecycle::Abandoned);
        t.remove(k);
        t.remove(k);
    }
}
