//! Reading what a C host passes: pointers checked for NULL, strings for
//! UTF-8, lengths before a slice is formed, and the options struct turned
//! into a [`Config`].

use super::*;
use crate::core::token::TokenConfig;

pub(super) fn non_null<T>(pointer: *mut T, name: &str) -> Result<*mut T, Failure> {
    if pointer.is_null() {
        return Err(Failure::invalid_argument(format!("{name} is NULL")));
    }
    Ok(pointer)
}

/// Borrows the hub behind a handle.
///
/// # Safety
/// `server` must be NULL or a live pointer from `wshub_start`.
pub(super) unsafe fn hub_ref<'a>(server: *const wshub_server) -> Result<&'a wshub_server, Failure> {
    // SAFETY: non-NULL, so live by the caller's contract.
    unsafe { server.as_ref() }.ok_or_else(|| Failure::invalid_argument("server is NULL"))
}

/// Borrows a NUL-terminated UTF-8 string; `not_utf8` is the code for a
/// string that is present but not UTF-8.
///
/// # Safety
/// `pointer` must be NULL or NUL-terminated and readable up to the NUL.
pub(super) unsafe fn c_str<'a>(
    pointer: *const c_char,
    name: &str,
    not_utf8: wshub_code,
) -> Result<&'a str, Failure> {
    if pointer.is_null() {
        return Err(Failure::invalid_argument(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let text = unsafe { CStr::from_ptr(pointer) };
    text.to_str()
        .map_err(|e| Failure::new(not_utf8, format!("{name} is not valid UTF-8 ({e})")))
}

/// Borrows `len` bytes at `pointer`.
///
/// # Safety
/// `pointer` must be NULL or point to `len` readable bytes.
pub(super) unsafe fn byte_slice<'a>(
    pointer: *const c_char,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    if pointer.is_null() {
        return Err(Failure::invalid_argument(format!("{name} is NULL")));
    }
    // `slice::from_raw_parts` requires this; a larger length is garbage.
    if isize::try_from(len).is_err() {
        return Err(Failure::invalid_argument(format!(
            "{name}_len {len} is larger than PTRDIFF_MAX"
        )));
    }
    // SAFETY: non-NULL, `len` readable bytes by the caller's contract, and
    // `len <= isize::MAX` checked above.
    Ok(unsafe { std::slice::from_raw_parts(pointer.cast::<u8>(), len) })
}

/// Builds the [`Config`] from C options (NULL: the defaults); the host's
/// callbacks run through `callbacks`.
///
/// # Safety
/// As `opts` of [`wshub_start`].
pub(super) unsafe fn config_from(
    opts: *const wshub_options,
    callbacks: &Arc<CallbackGate>,
) -> Result<Config, Failure> {
    if opts.is_null() {
        return Ok(Config::default());
    }
    // SAFETY: non-NULL, so its first field is readable by the caller's
    // contract whatever version of the struct it is.
    let size = unsafe { ptr::addr_of!((*opts).struct_size).read() };
    check_struct_size(size, "opts->struct_size")?;
    // The host's `size` bytes over the defaults: all of the struct for the
    // current layout, the prefix it had for the previous one (the fields
    // appended since keep their defaults).
    let mut options = default_options();
    // SAFETY: `size` bytes at `opts` are readable by the caller's contract
    // and `size` is at most `size_of::<wshub_options>()` (checked above);
    // every layout is a prefix of the current one, and every bit pattern
    // of the fields (pointers, integers, doubles) is a valid value.
    unsafe {
        ptr::copy_nonoverlapping(
            opts.cast::<u8>(),
            ptr::addr_of_mut!(options).cast::<u8>(),
            size,
        );
    };
    let o = &options;
    // SAFETY (three calls): string pointers are NULL or NUL-terminated,
    // `topics` NULL or NULL-terminated, by the caller's contract.
    let host = unsafe { c_str(o.host, "opts->host", WSHUB_ERR_INVALID_CONFIG) }?;
    let path = unsafe { c_str(o.path, "opts->path", WSHUB_ERR_INVALID_CONFIG) }?;
    let topics = match unsafe { string_set(o.topics, "opts->topics") }? {
        None => TopicPolicy::Any,
        Some(names) => TopicPolicy::Only(names),
    };
    // SAFETY: `allowed_origins` is NULL or NULL-terminated, likewise.
    let allowed_origins = unsafe { string_set(o.allowed_origins, "opts->allowed_origins") }?;
    Ok(Config {
        host: host.to_owned(),
        port: o.port,
        path: path.to_owned(),
        topics,
        allowed_origins,
        max_connections: o.max_connections,
        max_message_bytes: o.max_message_bytes,
        send_queue: o.send_queue,
        send_queue_bytes: o.send_queue_bytes,
        max_topics_per_connection: o.max_topics_per_connection,
        slow_client: slow_client_policy(o.slow_client)?,
        rate_limit: o.rate_limit,
        rate_burst: o.rate_burst,
        publish_queue: o.publish_queue,
        ping_interval: seconds("ping_interval", o.ping_interval)?,
        ping_timeout: seconds("ping_timeout", o.ping_timeout)?,
        handshake_timeout: seconds("handshake_timeout", o.handshake_timeout)?,
        shutdown_timeout: seconds("shutdown_timeout", o.shutdown_timeout)?,
        worker_threads: o.worker_threads,
        on_subscription: o.on_subscription.map(|callback| {
            let data = UserData(o.on_subscription_data);
            subscription_listener(callback, data, Arc::clone(callbacks))
        }),
        authorize: o.authorize.map(|callback| {
            authorizer(callback, UserData(o.authorize_data), Arc::clone(callbacks))
        }),
        authorize_timeout: seconds("authorize_timeout", o.authorize_timeout)?,
        // SAFETY (two calls): string options are NULL or NUL-terminated
        // by the caller's contract.
        backplane: unsafe { optional_str(o.backplane, "opts->backplane") }?,
        backplane_prefix: unsafe { optional_str(o.backplane_prefix, "opts->backplane_prefix") }?
            .unwrap_or_else(|| crate::core::config::DEFAULT_BACKPLANE_PREFIX.to_owned()),
        reuse_port: o.reuse_port,
        max_topics: o.max_topics,
        publish_queue_bytes: o.publish_queue_bytes,
        max_handshake_bytes: o.max_handshake_bytes,
        max_headers: o.max_headers,
        history_size: o.history_size,
        history_bytes: o.history_bytes,
        // 0 is off; anything else must be a valid duration.
        history_ttl: if o.history_ttl == 0.0 {
            None
        } else {
            Some(seconds("history_ttl", o.history_ttl)?)
        },
        retained_per_topic: o.retained_per_topic,
        retained_bytes: o.retained_bytes,
        // SAFETY: the string options are NULL or NUL-terminated, and
        // `jwt_key` has `jwt_key_len` readable bytes, by the caller's
        // contract.
        jwt: unsafe { token_config(o) }?,
        // SAFETY: NULL or NUL-terminated by the caller's contract.
        tls: unsafe { tls_files(o) }?,
        compression: flag("compression", o.compression)?,
        // `Config` checks the range; a negative level is told here, as given.
        compression_level: u32::try_from(o.compression_level).map_err(|_| {
            Failure::new(
                WSHUB_ERR_INVALID_CONFIG,
                format!(
                    "opts->compression_level must be 1 to 9, got {}",
                    o.compression_level
                ),
            )
        })?,
        compression_min_size: o.compression_min_size,
    })
}

/// An `int` option that is a yes or no: 0 or 1, anything else refused.
fn flag(name: &str, raw: c_int) -> Result<bool, Failure> {
    match raw {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Failure::new(
            WSHUB_ERR_INVALID_CONFIG,
            format!("opts->{name} must be 0 or 1, got {other}"),
        )),
    }
}

/// The TLS files (`None` when neither is set; one without the other is
/// `WSHUB_ERR_INVALID_CONFIG`).
///
/// # Safety
/// As the string options of [`config_from`].
unsafe fn tls_files(o: &wshub_options) -> Result<Option<crate::core::config::TlsFiles>, Failure> {
    // SAFETY (two calls): NULL or NUL-terminated by the caller's contract.
    let certfile = unsafe { optional_str(o.certfile, "opts->certfile") }?;
    let keyfile = unsafe { optional_str(o.keyfile, "opts->keyfile") }?;
    match (certfile, keyfile) {
        (None, None) => Ok(None),
        (Some(certfile), Some(keyfile)) => Ok(Some(crate::core::config::TlsFiles {
            certfile: certfile.into(),
            keyfile: keyfile.into(),
        })),
        _ => Err(Failure::new(
            WSHUB_ERR_INVALID_CONFIG,
            "opts->certfile and opts->keyfile must both be set (or neither)",
        )),
    }
}

/// The JWT options (`None` without `jwt_key`).
///
/// # Safety
/// As the string options of [`config_from`]; `jwt_key` must have
/// `jwt_key_len` readable bytes (or be NUL-terminated when it is 0).
unsafe fn token_config(o: &wshub_options) -> Result<Option<TokenConfig>, Failure> {
    if o.jwt_key.is_null() {
        return Ok(None);
    }
    let key = if o.jwt_key_len == 0 {
        // SAFETY: NUL-terminated by the caller's contract.
        unsafe { CStr::from_ptr(o.jwt_key) }.to_bytes().to_vec()
    } else {
        // SAFETY: `jwt_key_len` readable bytes by the caller's contract.
        unsafe { byte_slice(o.jwt_key, o.jwt_key_len, "opts->jwt_key") }?.to_vec()
    };
    // SAFETY (five calls): NULL or NUL-terminated, as above.
    let text = |p, name| unsafe { optional_str(p, name) };
    Ok(Some(TokenConfig {
        key,
        algorithms: text(o.jwt_algorithms, "opts->jwt_algorithms")?
            .unwrap_or_else(|| "HS256".to_owned())
            .split(',')
            .map(str::to_owned)
            .collect(),
        audience: text(o.jwt_audience, "opts->jwt_audience")?.map(|a| vec![a]),
        issuer: text(o.jwt_issuer, "opts->jwt_issuer")?.map(|i| vec![i]),
        leeway: seconds_or_zero("jwt_leeway", o.jwt_leeway)?,
        query_param: text(o.jwt_query, "opts->jwt_query")?.unwrap_or_else(|| "token".to_owned()),
        cookie: text(o.jwt_cookie, "opts->jwt_cookie")?,
    }))
}

/// Copies an optional string option (NULL: `None`).
///
/// # Safety
/// `pointer` must be NULL or NUL-terminated and readable up to the NUL.
pub(super) unsafe fn optional_str(
    pointer: *const c_char,
    name: &str,
) -> Result<Option<String>, Failure> {
    if pointer.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, so NUL-terminated by the caller's contract.
    unsafe { c_str(pointer, name, WSHUB_ERR_INVALID_CONFIG) }.map(|s| Some(s.to_owned()))
}

/// Reads the NULL-terminated allow-list (NULL: any topic). The names are
/// checked by [`Config::validate`], like the Python binding's.
///
/// # Safety
/// `list` must be NULL or a NULL-terminated array of NUL-terminated strings.
pub(super) unsafe fn string_set(
    list: *const *const c_char,
    field: &str,
) -> Result<Option<BTreeSet<String>>, Failure> {
    if list.is_null() {
        return Ok(None);
    }
    let mut names = BTreeSet::new();
    for index in 0..MAX_TOPIC_LIST_LEN {
        // SAFETY: every element up to the NULL terminator is readable.
        let item = unsafe { list.add(index).read() };
        if item.is_null() {
            return Ok(Some(names));
        }
        let name = format!("{field}[{index}]");
        // SAFETY: a non-NULL element is NUL-terminated.
        let topic = unsafe { c_str(item, &name, WSHUB_ERR_INVALID_CONFIG) }?;
        names.insert(topic.to_owned());
    }
    Err(Failure::invalid_argument(format!(
        "{field} has no NULL terminator within {MAX_TOPIC_LIST_LEN} entries"
    )))
}

/// Writes `text` and a NUL to `buf` when they fit in `cap` bytes, as
/// `snprintf` does; otherwise only a NUL at `buf[0]` (if `cap > 0`), so
/// that the caller never reads a truncated string.
///
/// # Safety
/// `buf` must have `cap` writable bytes (it may be NULL when `cap` is 0),
/// not overlapping `text`.
pub(super) unsafe fn write_c_string(text: &[u8], buf: *mut c_char, cap: usize) {
    let buf = buf.cast::<u8>();
    if text.len() < cap {
        // SAFETY: `text.len() + 1 <= cap` writable bytes, by the contract.
        unsafe {
            ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len());
            buf.add(text.len()).write(0);
        }
    } else if cap > 0 {
        // SAFETY: `cap > 0`, so `buf[0]` is writable.
        unsafe { buf.write(0) };
    }
}
