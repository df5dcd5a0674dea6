//! Failures on their way to C: a [`Failure`] is a code and a message; the
//! calling thread's last-error slot keeps the message for
//! `wshub_last_error()`; [`guard`] runs every exported body inside
//! `catch_unwind`, so that a panic becomes `WSHUB_ERR_PANIC` instead of
//! unwinding into C.

use super::*;

/// Why a call failed, on its way to the caller's last-error slot.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: wshub_code,
    message: String,
}

impl Failure {
    pub(super) fn new(code: wshub_code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(super) fn invalid_argument(message: impl Into<String>) -> Self {
        Failure::new(WSHUB_ERR_INVALID_ARGUMENT, message)
    }

    pub(super) fn panic(payload: &(dyn Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown panic");
        Failure::new(WSHUB_ERR_PANIC, format!("internal error (panic): {what}"))
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::InvalidJson(_) => WSHUB_ERR_INVALID_JSON,
            Error::InvalidTopic(_) => WSHUB_ERR_INVALID_TOPIC,
            Error::InvalidConfig(_) => WSHUB_ERR_INVALID_CONFIG,
            Error::NotRunning => WSHUB_ERR_NOT_RUNNING,
            Error::Overloaded => WSHUB_ERR_OVERLOADED,
            Error::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                WSHUB_ERR_ADDR_IN_USE
            }
            Error::Bind { .. } => WSHUB_ERR_BIND,
            Error::Runtime(_) => WSHUB_ERR_RUNTIME,
            Error::Forked { .. } => WSHUB_ERR_FORKED,
            Error::Backplane { .. } => WSHUB_ERR_BACKPLANE,
            Error::NotRetainable(_) => WSHUB_ERR_NOT_RETAINABLE,
            Error::Tls(_) => WSHUB_ERR_TLS,
        };
        Failure::new(code, error.to_string())
    }
}

/// The last failure on one thread, as C reads it.
pub(super) struct LastError {
    pub(super) code: wshub_code,
    /// Kept as a `CString` so `wshub_last_error` can hand out a pointer
    /// that stays valid until the next failure replaces it.
    pub(super) message: CString,
}

thread_local! {
    pub(super) static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError {
        code: WSHUB_OK,
        message: CString::default(),
    });
}

/// Records `failure` for `wshub_last_error`; never panics.
pub(super) fn set_last_error(failure: Failure) {
    // A message cannot carry a NUL into C; none of ours should hold one.
    let text = failure.message.replace('\0', "\\0");
    let message = CString::new(text).unwrap_or_default();
    // `try_with` fails only while the thread is being torn down, and
    // `try_borrow_mut` only if C re-entered us from inside a borrow, which
    // it cannot; losing the message then is better than panicking.
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = LastError {
                code: failure.code,
                message,
            };
        }
    });
}

/// The edge of every entry point: runs `body`, records a failure or a
/// caught panic as the thread's last error, and turns it into the
/// function's error value with `on_error`.
///
/// `AssertUnwindSafe`: after a panic the caller only gets an error code;
/// the core takes its locks ignoring poisoning, and the documentation of
/// `WSHUB_ERR_PANIC` tells the host to stop that hub.
pub(super) fn guard<T>(
    on_error: impl FnOnce(wshub_code) -> T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => return value,
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let failure = Failure::panic(payload.as_ref());
            // Dropping a payload may itself panic; keep that from unwinding.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            failure
        }
    };
    let code = failure.code;
    set_last_error(failure);
    on_error(code)
}

pub(super) fn code_as_int(code: wshub_code) -> c_int {
    code as c_int
}
