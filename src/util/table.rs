//! `Table<T>`: values found by a `usize` key, which is reused once freed. A vector with a free
//! list threaded through its vacant entries, like the `slab` crate's, but with every method
//! on a hot path marked `#[inline]` and writing no drop glue: the driver's op table (a key
//! per op, the SQE's `user_data`) and the timer wheel's entries take and free a key per
//! request, and `slab`'s generic insert, left to the inliner, costs about twice as much, or
//! more where a code-generation unit boundary keeps it out of line.

enum Entry<T> {
    /// Free; holds the next free key (`entries.len()` ends the list).
    Vacant(usize),
    Occupied(T),
}

pub(crate) struct Table<T> {
    entries: Vec<Entry<T>>,
    /// The first free key; `entries.len()` when none is free.
    next_free: usize,
}

impl<T> Table<T> {
    pub(crate) fn with_capacity(cap: usize) -> Table<T> {
        Table {
            entries: Vec::with_capacity(cap),
            next_free: 0,
        }
    }

    /// Stores `slot` under the most recently freed key (or a new one) and returns the key.
    #[inline]
    pub(crate) fn insert(&mut self, slot: T) -> usize {
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
    fn insert_new(&mut self, slot: T) -> usize {
        let key = self.entries.len();
        self.entries.push(Entry::Occupied(slot));
        self.next_free = self.entries.len();
        key
    }

    #[inline]
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Entry::Occupied(s)) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
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
    pub(crate) fn remove(&mut self, key: usize) -> T {
        let e = self.entries.get_mut(key).expect("table key out of range");
        match std::mem::replace(e, Entry::Vacant(self.next_free)) {
            Entry::Occupied(s) => {
                self.next_free = key;
                s
            }
            Entry::Vacant(next) => {
                *e = Entry::Vacant(next);
                panic!("table entry {key} freed twice");
            }
        }
    }

    /// Every occupied slot with its key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| match e {
                Entry::Occupied(s) => Some((k, s)),
                Entry::Vacant(_) => None,
            })
    }
}

impl<T> Default for Table<T> {
    fn default() -> Table<T> {
        Table::with_capacity(0)
    }
}

impl<T> std::ops::Index<usize> for Table<T> {
    type Output = T;
    fn index(&self, key: usize) -> &T {
        self.get(key).expect("no table entry at this key")
    }
}

impl<T> std::ops::IndexMut<usize> for Table<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("no table entry at this key")
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    fn keys(t: &Table<u32>) -> Vec<usize> {
        t.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn freed_keys_are_reused_last_freed_first() {
        let mut t = Table::with_capacity(2);
        let a = t.insert(7);
        let b = t.insert(7);
        let c = t.insert(7);
        assert_eq!((a, b, c), (0, 1, 2));
        t.remove(a);
        t.remove(c);
        assert_eq!(keys(&t), [1]);
        assert_eq!(t.insert(7), c);
        assert_eq!(t.insert(7), a);
        assert_eq!(t.insert(7), 3);
        assert_eq!(keys(&t), [0, 1, 2, 3]);
    }

    #[test]
    fn a_vacant_key_is_found_empty() {
        let mut t = Table::with_capacity(1);
        let k = t.insert(7);
        assert!(t.get(k).is_some());
        t.remove(k);
        assert!(t.get(k).is_none());
        assert!(t.get_mut(k).is_none());
        assert!(t.get(k + 5).is_none());
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn freeing_a_vacant_key_panics() {
        let mut t = Table::with_capacity(1);
        let k = t.insert(7);
        t.insert(7);
        t.remove(k);
        t.remove(k);
    }
}
