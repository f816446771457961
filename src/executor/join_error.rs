//! `JoinError`: why a task produced no output. Below both the task (which makes one) and its
//! `JoinHandle` (which hands it out).

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// Why a task produced no output: it panicked, or it was cancelled.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    // A Mutex makes the `Send`-only payload `Sync`, so JoinError fits `Box<dyn Error + Send +
    // Sync>`; it is only locked to read the message.
    Panic(Mutex<Box<dyn Any + Send + 'static>>),
}

impl JoinError {
    pub(super) fn cancelled() -> JoinError {
        JoinError {
            repr: Repr::Cancelled,
        }
    }

    pub(super) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            repr: Repr::Panic(Mutex::new(payload)),
        }
    }

    /// The task was aborted, or its loop closed before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic's payload, to resume it with `std::panic::resume_unwind`.
    ///
    /// # Panics
    ///
    /// If the task was cancelled rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.repr {
            Repr::Panic(p) => p.into_inner().unwrap_or_else(|e| e.into_inner()),
            Repr::Cancelled => panic!("JoinError::into_panic on a cancelled task"),
        }
    }

    fn panic_message(&self) -> Option<String> {
        let Repr::Panic(p) = &self.repr else {
            return None;
        };
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = p.downcast_ref::<&'static str>() {
            Some((*s).to_owned())
        } else {
            p.downcast_ref::<String>().cloned()
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("task was cancelled"),
            (Repr::Panic(_), Some(m)) => write!(f, "task panicked: {m}"),
            (Repr::Panic(_), None) => f.write_str("task panicked"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}
