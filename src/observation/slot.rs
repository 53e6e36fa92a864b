//! [`LatestSlot`]: the newest value of a stream, shared between threads.

use std::sync::{Mutex, MutexGuard};

/// A value with the timestamp the caller associates with it (nanoseconds; the message's
/// header stamp or its receive time, as the caller decides).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<T> {
    /// The value.
    pub value: T,
    /// Its stamp, nanoseconds.
    pub stamp_ns: i64,
}

/// Holds the latest value of a stream (one camera, the joint states): subscription callbacks
/// [`store`](Self::store), the control loop [`peek`](Self::peek)s or
/// [`take_latest`](Self::take_latest)s. Older values are overwritten, never queued.
///
/// A plain mutex: critical sections only move a value in or out. A panic in another thread
/// while holding the lock does not make the slot unusable (poisoning is ignored, since the
/// slot's state is always a complete `Option`).
#[derive(Debug, Default)]
pub struct LatestSlot<T> {
    inner: Mutex<Option<Stamped<T>>>,
}

impl<T> LatestSlot<T> {
    /// An empty slot.
    pub fn new() -> Self {
        LatestSlot {
            inner: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Stamped<T>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the held value. The previous one is dropped after the lock is released.
    pub fn store(&self, value: T, stamp_ns: i64) {
        let previous = self.lock().replace(Stamped { value, stamp_ns });
        drop(previous);
    }

    /// Removes and returns the held value, leaving the slot empty.
    pub fn take_latest(&self) -> Option<Stamped<T>> {
        self.lock().take()
    }

    /// A copy of the held value, leaving it in place.
    pub fn peek(&self) -> Option<Stamped<T>>
    where
        T: Clone,
    {
        self.lock().clone()
    }

    /// Runs `f` on the held value and its stamp under the lock, without cloning. Keep `f` short.
    pub fn with_latest<R>(&self, f: impl FnOnce(&T, i64) -> R) -> Option<R> {
        self.lock().as_ref().map(|s| f(&s.value, s.stamp_ns))
    }

    /// The held value's stamp, if any.
    pub fn stamp_ns(&self) -> Option<i64> {
        self.lock().as_ref().map(|s| s.stamp_ns)
    }

    /// Empties the slot (e.g. on reset).
    pub fn clear(&self) {
        let previous = self.lock().take();
        drop(previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_only_the_latest() {
        let slot = LatestSlot::new();
        assert_eq!(slot.peek(), None::<Stamped<u32>>);
        slot.store(1u32, 10);
        slot.store(2, 20);
        assert_eq!(slot.stamp_ns(), Some(20));
        assert_eq!(slot.with_latest(|v, s| (*v, s)), Some((2, 20)));
        assert_eq!(
            slot.peek(),
            Some(Stamped {
                value: 2,
                stamp_ns: 20
            })
        );
        assert_eq!(
            slot.take_latest(),
            Some(Stamped {
                value: 2,
                stamp_ns: 20
            })
        );
        assert_eq!(slot.take_latest(), None);
        slot.store(3, 30);
        slot.clear();
        assert_eq!(slot.stamp_ns(), None);
    }

    #[test]
    fn shared_between_threads() {
        let slot = Arc::new(LatestSlot::new());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let slot = Arc::clone(&slot);
                std::thread::spawn(move || {
                    for i in 0..1000i64 {
                        slot.store(vec![t; 8], i);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let last = slot.take_latest().unwrap();
        assert_eq!(last.stamp_ns, 999);
        assert_eq!(last.value.len(), 8);
    }

    #[test]
    fn survives_a_poisoned_lock() {
        let slot = Arc::new(LatestSlot::new());
        slot.store(1u8, 1);
        let s2 = Arc::clone(&slot);
        let _ = std::thread::spawn(move || {
            s2.with_latest(|_, _| panic!("boom"));
        })
        .join();
        assert_eq!(
            slot.peek(),
            Some(Stamped {
                value: 1,
                stamp_ns: 1
            })
        );
        slot.store(2, 2);
        assert_eq!(slot.stamp_ns(), Some(2));
    }
}
