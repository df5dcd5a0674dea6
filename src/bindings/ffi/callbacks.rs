//! The host's callbacks behind the core's hooks: `on_subscription` as a
//! [`SubscriptionListener`], `authorize` as an [`Authorizer`] (with the C
//! view of the request it is called with), their opaque data pointers, and
//! the gate `wshub_stop` closes to wait for the callbacks still running.

use super::*;

/// The host's `on_subscription_data` or `authorize_data`: a pointer wshub
/// never dereferences, only hands back to the callback it came with.
pub(super) struct UserData(pub(super) *mut c_void);

// SAFETY: wshub never reads or writes through the pointer; it only passes
// it to the host's callback on wshub's threads, which the header requires
// the host to allow (the data must be usable from other threads until
// `wshub_stop()` returns, and `wshub_stop()` waits for running callbacks).
unsafe impl Send for UserData {}
// SAFETY: shared between threads it is still only passed on, never
// dereferenced by wshub. `on_subscription` is called from one thread at a
// time, but `authorize` runs on the runtime's blocking threads and may be
// called from several at once with the same pointer: the header requires
// `authorize` and its data to be thread-safe for that.
unsafe impl Sync for UserData {}

impl UserData {
    // A method, not a field access, so closures capture the whole
    // (Send + Sync) wrapper rather than the raw pointer inside it.
    pub(super) fn pointer(&self) -> *mut c_void {
        self.0
    }
}

/// The host's callbacks running now. `wshub_stop` closes the gate once
/// the hub is stopped and waits for the callbacks still running (an
/// `authorize` that outlived `authorize_timeout` keeps running on its
/// blocking thread, which the runtime does not wait for), so the host may
/// free the callbacks' data as soon as `wshub_stop` returns.
#[derive(Default)]
pub(super) struct CallbackGate {
    state: Mutex<GateState>,
    idle: Condvar,
}

#[derive(Default)]
pub(super) struct GateState {
    running: usize,
    closed: bool,
}

/// One callback running; leaving the gate when dropped.
pub(super) struct GatePass<'a>(&'a CallbackGate);

impl CallbackGate {
    /// `None` once the hub was stopped: the callback must not be called.
    pub(super) fn enter(&self) -> Option<GatePass<'_>> {
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        state.running += 1;
        Some(GatePass(self))
    }

    /// Lets no callback start any more and waits for the running ones.
    pub(super) fn close_and_wait(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        while state.running > 0 {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.running -= 1;
        if state.running == 0 {
            self.0.idle.notify_all();
        }
    }
}

pub(super) fn subscription_listener(
    callback: unsafe extern "C" fn(*mut c_void, *const c_char, u64),
    data: UserData,
    gate: Arc<CallbackGate>,
) -> SubscriptionListener {
    SubscriptionListener(Arc::new(move |topic: &str, subscribers: u64| {
        // Topic names are `[A-Za-z0-9_.:-]`, never containing NUL.
        let Ok(topic) = CString::new(topic) else {
            return;
        };
        let Some(_running) = gate.enter() else {
            return;
        };
        // SAFETY: the host gave us this callback and data for this purpose.
        unsafe { callback(data.pointer(), topic.as_ptr(), subscribers) };
    }))
}

pub(super) fn authorizer(
    callback: unsafe extern "C" fn(*mut c_void, *const wshub_request, *mut wshub_grant) -> c_int,
    data: UserData,
    gate: Arc<CallbackGate>,
) -> Authorizer {
    Authorizer(Arc::new(move |request: &HandshakeRequest| {
        let Some(_running) = gate.enter() else {
            // The hub is stopping: nobody is admitted any more.
            return Authorization::Deny(503);
        };
        let grant = wshub_grant {
            topics: Mutex::new(None),
        };
        let grant_ptr = ptr::from_ref(&grant).cast_mut();
        // SAFETY: the host gave us this callback and data for this purpose;
        // the request and the grant outlive the call, and the grant is only
        // used through shared references (`wshub_grant_topic`).
        let answer = with_c_request(request, |c_request| unsafe {
            callback(data.pointer(), c_request, grant_ptr)
        });
        // A NUL inside the request line or a header cannot be passed to C.
        let Some(answer) = answer else {
            return Authorization::Deny(400);
        };
        let granted = grant
            .topics
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match answer {
            0 => granted.map_or(Authorization::Allow, Authorization::AllowTopics),
            1 => Authorization::AllowTopics(granted.unwrap_or_default()),
            other => Authorization::Deny(u16::try_from(other).unwrap_or(403)),
        }
    }))
}

/// Builds the C view of `request` and runs `call` with it; `None` when
/// the path, the query or a header holds a NUL byte.
pub(super) fn with_c_request<R>(
    request: &HandshakeRequest,
    call: impl FnOnce(&wshub_request) -> R,
) -> Option<R> {
    let path = CString::new(request.path.as_str()).ok()?;
    let query = CString::new(request.query.as_str()).ok()?;
    let strict = |(name, value): &(String, String)| {
        Some((
            CString::new(name.as_str()).ok()?,
            CString::new(value.as_str()).ok()?,
        ))
    };
    let headers = request
        .headers
        .iter()
        .map(strict)
        .collect::<Option<Vec<_>>>()?;
    // Decoded parameters may hold `%00`; they are left out, not fatal.
    let params: Vec<_> = request.query_params().iter().filter_map(strict).collect();
    let cookies: Vec<_> = request.cookies().iter().filter_map(strict).collect();
    let topics: Vec<CString> = request
        .topics
        .iter()
        .filter_map(|t| CString::new(t.as_str()).ok())
        .collect();
    let host = CString::new(request.peer.ip().to_string()).ok()?;

    let view = |pairs: &[(CString, CString)]| -> Vec<wshub_pair> {
        pairs
            .iter()
            .map(|(name, value)| wshub_pair {
                name: name.as_ptr(),
                value: value.as_ptr(),
            })
            .collect()
    };
    let (headers, params, cookies) = (view(&headers), view(&params), view(&cookies));
    let mut topic_ptrs: Vec<*const c_char> = topics.iter().map(|t| t.as_ptr()).collect();
    topic_ptrs.push(ptr::null());
    let c_request = wshub_request {
        path: path.as_ptr(),
        query: query.as_ptr(),
        query_params: params.as_ptr(),
        query_params_len: params.len(),
        headers: headers.as_ptr(),
        headers_len: headers.len(),
        cookies: cookies.as_ptr(),
        cookies_len: cookies.len(),
        client_host: host.as_ptr(),
        client_port: request.peer.port(),
        topics: topic_ptrs.as_ptr(),
        topics_len: topics.len(),
    };
    Some(call(&c_request))
}
