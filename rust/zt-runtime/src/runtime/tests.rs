use super::*;
use crate::events::Subscription;
use crate::events::{EventCode, RecvError};
use crate::store::MemoryStore;

fn runtime() -> (NodeRuntime, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let rt = NodeRuntime::new(
        store.clone(),
        RuntimeOptions {
            load: LoadOptions {
                keygen_threads: 1,
                ..Default::default()
            },
            // Unit tests talk to nobody: the default planet's roots are public hosts.
            allowed_destinations: Some(Vec::new()),
            ..Default::default()
        },
    );
    (rt, store)
}

fn codes(sub: &Subscription) -> Vec<EventCode> {
    std::iter::from_fn(|| sub.recv(Some(Duration::from_millis(200))).ok())
        .map(|e| e.code())
        .collect()
}

#[test]
fn lifecycle_start_stop_restart() {
    let (rt, store) = runtime();
    let sub = rt.subscribe(64).unwrap();
    assert_eq!(rt.lifecycle(), Lifecycle::Created);
    rt.stop(); // no-op
    rt.start().unwrap();
    rt.start().unwrap(); // idempotent
    rt.wait_running(Some(Duration::from_secs(30))).unwrap();
    let id = rt.snapshot().unwrap().identity;
    assert!(store.get("identity.secret").unwrap().is_some());
    rt.stop();
    rt.stop();
    assert_eq!(rt.lifecycle(), Lifecycle::Stopped);
    let c = codes(&sub);
    assert_eq!(
        c,
        vec![
            EventCode::StoreIdentitySecret,
            EventCode::StoreIdentityPublic,
            EventCode::NodeUp,
            EventCode::PlanetChanged,
            EventCode::StorePlanet,
            EventCode::NodeDown
        ]
    );
    rt.start().unwrap();
    rt.wait_running(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(
        rt.snapshot().unwrap().identity,
        id,
        "restart reuses the stored identity"
    );
    drop(rt);
    assert!(codes(&sub).contains(&EventCode::NodeDown));
    assert_eq!(sub.try_recv(), Err(RecvError::Closed));
}

#[test]
fn corrupt_store_faults_with_cause() {
    let (rt, store) = runtime();
    store
        .put("identity.secret", b"0123456789:0:zz", true)
        .unwrap();
    let sub = rt.subscribe(8).unwrap();
    rt.start().unwrap();
    let err = rt.wait_running(Some(Duration::from_secs(10))).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Faulted(ref m) if m.contains("identity.secret")),
        "{err}"
    );
    assert!(matches!(rt.lifecycle(), Lifecycle::Faulted(_)));
    assert_eq!(
        sub.recv(Some(Duration::from_secs(1))).unwrap().code(),
        EventCode::NodeFatalError
    );
    assert_eq!(
        store.get("identity.secret").unwrap().unwrap(),
        b"0123456789:0:zz"
    );
}

#[test]
fn concurrent_start_stop_from_threads() {
    let (rt, _) = runtime();
    let rt = Arc::new(rt);
    let (done_tx, done_rx) = mpsc::channel();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let rt = rt.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    if i % 2 == 0 {
                        rt.start().unwrap();
                    } else {
                        rt.stop();
                    }
                }
                done.send(()).unwrap();
            })
        })
        .collect();
    // A watchdog rather than a hang: every thread must finish.
    for _ in 0..threads.len() {
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("start/stop deadlocked");
    }
    for t in threads {
        t.join().unwrap();
    }
    rt.stop();
    assert_eq!(rt.lifecycle(), Lifecycle::Stopped);
    rt.start().unwrap();
    rt.wait_running(Some(Duration::from_secs(30))).unwrap();
}
