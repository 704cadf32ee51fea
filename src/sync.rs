//! Locks that stay usable after a thread panicked while holding them.
//!
//! A `std` lock is *poisoned* when a thread panics while holding it: every
//! later `lock()` returns an error carrying the guard. cellvm never unwraps
//! that error; it takes the guard and carries on, always through these
//! helpers, because:
//!
//! - The panic is already reported: the panic hook prints it, and whoever
//!   joins the thread logs it (vCPU and virtio worker threads). Panicking
//!   again in every other thread that touches the same lock would turn one
//!   failure into many, and could take down the control loop that has to
//!   stop the cell cleanly.
//! - The state behind these locks stays usable: it is device and bookkeeping
//!   state (registers, queues, tables) that a device model must already
//!   accept in any combination a guest can produce, so the worst a
//!   half-done update leaves is a device the guest sees misbehave; the other
//!   devices and the control loop keep working.
//!
//! Release builds abort on panic (`panic = "abort"` in `Cargo.toml`), so
//! there a poisoned lock is never observed; in debug builds and tests a
//! panicking thread unwinds and these helpers keep the rest running.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    WaitTimeoutResult,
};
use std::time::Duration;

/// Locks `mutex`, taking the guard even if a panicking thread poisoned it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `rwlock` for reading, even if a panicking thread poisoned it.
pub fn read<T: ?Sized>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `rwlock` for writing, even if a panicking thread poisoned it.
pub fn write<T: ?Sized>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The data of a mutex held by `&mut` (no locking needed), even if a
/// panicking thread poisoned it.
pub fn get_mut<T: ?Sized>(mutex: &mut Mutex<T>) -> &mut T {
    mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` (spurious wake-ups included), giving back the guard
/// even if the mutex was poisoned meanwhile.
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` for at most `timeout` (spurious wake-ups included),
/// giving back the guard even if the mutex was poisoned meanwhile.
pub fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    condvar
        .wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Poisons `mutex` by panicking in a thread that holds it.
    fn poison<T: Send + 'static>(mutex: &Arc<Mutex<T>>) {
        let m = Arc::clone(mutex);
        let r = thread::spawn(move || {
            let _guard = m.lock().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(r.is_err());
        assert!(mutex.is_poisoned());
    }

    #[test]
    fn lock_recovers_a_poisoned_mutex_and_keeps_its_data() {
        let m = Arc::new(Mutex::new(7u32));
        poison(&m);
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 8);
    }

    #[test]
    fn lock_works_on_unsized_data() {
        let m: Arc<Mutex<dyn std::fmt::Debug + Send>> = Arc::new(Mutex::new(3u8));
        assert_eq!(format!("{:?}", &*lock(&m)), "3");
    }

    #[test]
    fn get_mut_recovers_a_poisoned_mutex() {
        let m = Arc::new(Mutex::new(vec![1]));
        poison(&m);
        let mut m = Arc::try_unwrap(m).unwrap();
        get_mut(&mut m).push(2);
        assert_eq!(*lock(&m), vec![1, 2]);
    }

    #[test]
    fn read_and_write_recover_a_poisoned_rwlock() {
        let l = Arc::new(RwLock::new(1u32));
        let l2 = Arc::clone(&l);
        let r = thread::spawn(move || {
            let _guard = l2.write().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(r.is_err());
        assert!(l.is_poisoned());
        *write(&l) = 2;
        assert_eq!(*read(&l), 2);
    }

    #[test]
    fn wait_timeout_returns_the_guard_of_a_poisoned_mutex() {
        let m = Arc::new(Mutex::new(5u32));
        poison(&m);
        let cv = Condvar::new();
        let (guard, result) = wait_timeout(&cv, lock(&m), Duration::from_millis(1));
        assert!(result.timed_out());
        assert_eq!(*guard, 5);
    }
}
