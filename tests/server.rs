//! The core over real sockets, without Python: a tokio-tungstenite client
//! against `Server` on 127.0.0.1 port 0.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wshub::{Config, Server, TopicPolicy};

const WAIT: Duration = Duration::from_secs(10);

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, query: &str) -> Client {
    let url = format!("ws://127.0.0.1:{}/api/ws{query}", server.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    ws
}

async fn next_text(ws: &mut Client) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read error");
        if let Message::Text(text) = msg {
            return text.as_str().to_owned();
        }
    }
}

fn start(config: Config) -> Server {
    Server::start(Config { port: 0, ..config }).expect("server starts")
}

#[tokio::test]
async fn publications_reach_subscribers_byte_for_byte() {
    let server = start(Config::default());
    let mut ws = connect(&server, "?topics=odds").await;
    let ack = next_text(&mut ws).await;
    let (epoch, seq) = server
        .stream("odds")
        .expect("a subscribed topic has a stream");
    assert_eq!(seq, 0);
    assert_eq!(
        ack,
        format!(
            r#"{{"type":"connected","topics":["odds"],"rejected":[],"streams":{{"odds":{{"epoch":"{epoch}","seq":0}}}}}}"#
        )
    );
    assert_eq!(server.broadcast("odds", r#"{"home": 1.85}"#).unwrap(), 1);
    assert_eq!(server.broadcast("other", "1").unwrap(), 0);
    assert_eq!(server.broadcast("odds", "[1]").unwrap(), 1);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"message","topic":"odds","seq":1,"data":{"home": 1.85}}"#
    );
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"message","topic":"odds","seq":2,"data":[1]}"#
    );
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

#[tokio::test]
async fn allow_list_subscribes_to_all_when_nothing_valid_is_asked() {
    let server = start(Config {
        topics: TopicPolicy::Only(["a".to_string(), "b".to_string()].into()),
        ..Config::default()
    });
    let mut ws = connect(&server, "?topics=zzz").await;
    let ack = next_text(&mut ws).await;
    let epoch = |t: &str| server.stream(t).expect("subscribed").0;
    assert_eq!(
        ack,
        format!(
            r#"{{"type":"connected","topics":["a","b"],"rejected":["zzz"],"reasons":{{"zzz":"not_allowed"}},"streams":{{"a":{{"epoch":"{}","seq":0}},"b":{{"epoch":"{}","seq":0}}}}}}"#,
            epoch("a"),
            epoch("b")
        )
    );
    ws.send(Message::text(r#"{"type":"unsubscribe","topics":["a"]}"#))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"unsubscribed","topics":["b"]}"#
    );
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

#[tokio::test]
async fn stop_sends_going_away_to_clients() {
    let server = start(Config::default());
    let mut ws = connect(&server, "").await;
    next_text(&mut ws).await;
    let stopper = std::thread::spawn(move || server.stop());
    let close = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            let msg = msg.expect("read ok");
            if let Message::Close(frame) = msg {
                return frame;
            }
        }
        None
    })
    .await
    .expect("no close in time")
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    stopper.join().unwrap();
}

#[test]
fn taken_port_is_reported_with_the_os_error() {
    let first = start(Config::default());
    let err = Server::start(Config {
        port: first.port(),
        ..Config::default()
    })
    .err()
    .expect("second bind fails");
    match err {
        wshub::Error::Bind { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn broadcast_after_stop_is_refused() {
    let server = start(Config::default());
    server.stop();
    server.stop();
    assert!(matches!(
        server.broadcast("t", "1"),
        Err(wshub::Error::NotRunning)
    ));
}

/// `stop()` called from async code (inside a tokio runtime, where it cannot
/// wait on the hub's runtime directly) still stops everything it started:
/// the "last subscriber gone" event is delivered and the events thread has
/// ended when it returns.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_inside_a_runtime_ends_the_events_thread() {
    use std::sync::{Arc, Mutex};
    use wshub::SubscriptionListener;

    // (topic, subscribers, the listener thread's kernel id)
    let seen: Arc<Mutex<Vec<(String, u64, i64)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let listener = SubscriptionListener(Arc::new(move |topic: &str, subscribers: u64| {
        // SAFETY: gettid has no preconditions.
        let tid = i64::from(unsafe { libc::gettid() });
        sink.lock()
            .unwrap()
            .push((topic.to_owned(), subscribers, tid));
    }));
    let server = start(Config {
        on_subscription: Some(listener),
        ..Config::default()
    });
    let mut ws = connect(&server, "?topics=t").await;
    next_text(&mut ws).await;
    // The client reads until the hub closes it, on another worker thread.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no subscription event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop();
    let seen = seen.lock().unwrap().clone();
    let tid = seen[0].2;
    assert!(
        !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists(),
        "the subscription-events thread still runs after stop()"
    );
    let events: Vec<(&str, u64)> = seen.iter().map(|(t, n, _)| (t.as_str(), *n)).collect();
    assert_eq!(events, [("t", 1), ("t", 0)]);
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the client was not closed")
        .unwrap();
}
