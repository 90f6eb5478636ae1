//! Supervision tests: restarts after panics, the restart budget, start failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::*;

/// A child whose behaviour the test scripts.
struct Flaky;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serves messages; panics when told to
    Healthy,
    /// Cannot start at all
    FailToStart,
}

enum FlakyMsg {
    /// Replies with the incarnation number (1 for the first start)
    Ping(RpcReplyPort<u32>),
    /// Panics inside the handler
    Panic,
    /// Panics inside the handler with this message
    PanicWith(String),
}

impl Actor for Flaky {
    type Msg = FlakyMsg;
    type State = u32;
    type Arguments = (Arc<AtomicU32>, Mode);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (starts, mode): Self::Arguments,
    ) -> Result<u32, ActorProcessingErr> {
        if mode == Mode::FailToStart {
            return Err("no connection to the venue".into());
        }
        Ok(starts.fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        incarnation: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FlakyMsg::Ping(reply) => {
                let _ = reply.send(*incarnation);
            }
            FlakyMsg::Panic => panic!("deliberate panic in incarnation {incarnation}"),
            FlakyMsg::PanicWith(text) => panic!("{text}"),
        }
        Ok(())
    }
}

/// An actor that fails as soon as it has started, every time.
struct AlwaysFails;

impl Actor for AlwaysFails {
    type Msg = ();
    type State = ();
    type Arguments = Arc<AtomicU32>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        starts: Arc<AtomicU32>,
    ) -> Result<(), ActorProcessingErr> {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("lost the database connection".into())
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4())
}

fn fast_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(30),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

async fn ping(name: &str) -> Option<u32> {
    let actor: ActorRef<FlakyMsg> = ActorRef::where_is(name)?;
    ractor::call_t!(actor, FlakyMsg::Ping, 1_000).ok()
}

/// Polls `probe` until it returns `Some`, for at most `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_panicking_child_is_restarted_and_serves_messages_again() {
    let name = unique("flaky");
    let starts = Arc::new(AtomicU32::new(0));
    let spec = {
        let starts = starts.clone();
        ChildSpec::new(name.clone(), move || {
            (Flaky, (starts.clone(), Mode::Healthy))
        })
    };
    let gateway = Gateway::start(vec![spec], fast_policy(3)).await.unwrap();
    assert_eq!(ping(&name).await, Some(1));

    let actor: ActorRef<FlakyMsg> = ActorRef::where_is(name.clone()).unwrap();
    actor.send_message(FlakyMsg::Panic).unwrap();

    let incarnation = wait_until(Duration::from_secs(5), || async {
        ping(&name).await.filter(|i| *i == 2)
    })
    .await;
    assert_eq!(incarnation, Some(2), "the child was not restarted");

    let status = gateway.status().await.unwrap();
    let child = &status.children[0];
    assert_eq!(child.state, ChildState::Running);
    assert_eq!(child.restarts, 1);
    assert!(
        child
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("deliberate panic in incarnation 1")),
        "last error was {:?}",
        child.last_error
    );
    gateway.shutdown().await.unwrap();
    assert!(ActorRef::<FlakyMsg>::where_is(name).is_none());
}

#[tokio::test]
async fn a_child_that_keeps_failing_exhausts_the_budget_and_stops_the_gateway() {
    let name = unique("always-fails");
    let starts = Arc::new(AtomicU32::new(0));
    let healthy = unique("bystander");
    let spec = {
        let starts = starts.clone();
        ChildSpec::new(name.clone(), move || (AlwaysFails, starts.clone()))
    };
    let bystander = {
        let starts = Arc::new(AtomicU32::new(0));
        ChildSpec::new(healthy.clone(), move || {
            (Flaky, (starts.clone(), Mode::Healthy))
        })
    };
    let mut gateway = Gateway::start(vec![bystander, spec], fast_policy(2))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), gateway.wait())
        .await
        .expect("the gateway did not give up");
    match outcome {
        Err(GatewayError::RestartBudgetExhausted {
            child, failures, ..
        }) => {
            assert_eq!(child, name);
            assert_eq!(failures, 3);
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    // the first start plus two restarts; no fourth start
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    let message = gateway.wait().await.unwrap_err().to_string();
    assert!(message.contains(&name), "{message}");
    assert!(
        message.contains("lost the database connection"),
        "{message}"
    );
    // the rest of the tree was stopped too
    assert!(
        wait_until(Duration::from_secs(5), || async {
            ActorRef::<FlakyMsg>::where_is(healthy.clone())
                .is_none()
                .then_some(())
        })
        .await
        .is_some()
    );
}

#[tokio::test]
async fn failures_outside_the_window_do_not_count() {
    let name = unique("flaky");
    let starts = Arc::new(AtomicU32::new(0));
    let spec = {
        let starts = starts.clone();
        ChildSpec::new(name.clone(), move || {
            (Flaky, (starts.clone(), Mode::Healthy))
        })
    };
    let policy = RestartPolicy {
        max_restarts: 1,
        window: Duration::from_millis(200),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(5),
    };
    let gateway = Gateway::start(vec![spec], policy).await.unwrap();
    for expected in 2..=4 {
        let actor: ActorRef<FlakyMsg> = ActorRef::where_is(name.clone()).unwrap();
        actor.send_message(FlakyMsg::Panic).unwrap();
        let got = wait_until(Duration::from_secs(5), || async {
            ping(&name).await.filter(|i| *i == expected)
        })
        .await;
        assert_eq!(got, Some(expected));
        // let the failure age out of the window before the next one
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(gateway.status().await.unwrap().children[0].restarts, 3);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_child_that_cannot_start_is_named_in_the_error() {
    let ok = unique("ok");
    let bad = unique("cannot-start");
    let specs = vec![
        {
            let starts = Arc::new(AtomicU32::new(0));
            ChildSpec::new(ok.clone(), move || (Flaky, (starts.clone(), Mode::Healthy)))
        },
        {
            let starts = Arc::new(AtomicU32::new(0));
            ChildSpec::new(bad.clone(), move || {
                (Flaky, (starts.clone(), Mode::FailToStart))
            })
        },
    ];
    let err = Gateway::start(specs, fast_policy(3)).await.unwrap_err();
    match &err {
        GatewayError::ChildStartFailed { child, message } => {
            assert_eq!(child, &bad);
            assert!(message.contains("no connection to the venue"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // the child that had started is stopped again
    assert!(
        wait_until(Duration::from_secs(5), || async {
            ActorRef::<FlakyMsg>::where_is(ok.clone())
                .is_none()
                .then_some(())
        })
        .await
        .is_some()
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let policy = RestartPolicy {
        max_restarts: 10,
        window: Duration::from_secs(60),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(1_000),
    };
    assert_eq!(policy.backoff(1), Duration::from_millis(100));
    assert_eq!(policy.backoff(2), Duration::from_millis(200));
    assert_eq!(policy.backoff(4), Duration::from_millis(800));
    assert_eq!(policy.backoff(5), Duration::from_millis(1_000));
    assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(1_000));
}

/// A `tracing` writer that keeps what it is given and passes it on to the test harness's
/// captured output, so that a failing test still shows its logs and panics.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide subscriber of this test binary. A thread-local one (`set_default`) can miss
/// events when other threads without a subscriber hit the same callsites first.
fn captured_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            captured
        })
        .clone()
}

#[tokio::test]
async fn a_panic_inside_an_actor_is_reported_through_tracing() {
    let captured = captured_logs();
    let name = unique("flaky");
    let panic_text = format!("deliberate panic of {name}");
    let spec = {
        let starts = Arc::new(AtomicU32::new(0));
        ChildSpec::new(name.clone(), move || {
            (Flaky, (starts.clone(), Mode::Healthy))
        })
    };
    let gateway = Gateway::start(vec![spec], fast_policy(3)).await.unwrap();
    let actor: ActorRef<FlakyMsg> = ActorRef::where_is(name.clone()).unwrap();
    actor
        .send_message(FlakyMsg::PanicWith(panic_text.clone()))
        .unwrap();
    let restarted = wait_until(Duration::from_secs(5), || async {
        ping(&name).await.filter(|i| *i == 2)
    })
    .await;
    assert_eq!(restarted, Some(2));
    gateway.shutdown().await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let panic_line = log
        .lines()
        .find(|l| l.contains(&format!("panic={panic_text}")))
        .unwrap_or_else(|| panic!("the panic was not logged through tracing"));
    assert!(panic_line.contains("ERROR"), "{panic_line}");
    assert!(panic_line.contains("gateway/tests.rs"), "{panic_line}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&name) && l.contains("restarting")),
        "the restart was not logged"
    );
}
