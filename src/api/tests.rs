use super::protocol::*;
use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

struct Echo;

impl ControlTarget for Echo {
    fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        match request {
            Request::Detach { id, .. } => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no device {id}"),
            )),
            _ => Ok(Reply::Devices(vec![DeviceInfo {
                id: "console".into(),
                kind: "uart",
                ..DeviceInfo::default()
            }])),
        }
    }
}

fn server() -> (tempfile::TempDir, PathBuf, SocketGuard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("t.sock");
    let guard = ApiServer::bind(&path)
        .unwrap()
        .spawn(Arc::new(Echo))
        .unwrap();
    (dir, path, guard)
}

fn raw_exchange(path: &Path, line: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply
}

#[test]
fn an_idle_client_does_not_keep_another_clients_request_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("t.sock");
    let _guard = ApiServer::bind(&path)
        .unwrap()
        .with_idle_timeout(Duration::from_millis(200))
        .spawn(Arc::new(Echo))
        .unwrap();
    // Connects and sends nothing: the server is serving it first.
    let mut idle = UnixStream::connect(&path).unwrap();
    // Bounded far above the idle timeout; without one this never returns.
    let r = client::call(&path, &Request::Status {}, Duration::from_secs(10)).unwrap();
    assert_eq!(
        r,
        Response::ok(serde_json::json!([{"id": "console", "kind": "uart"}]))
    );
    // The idle connection was closed by the server.
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
}

#[test]
fn status_request_gets_the_targets_answer() {
    let (_d, path, _g) = server();
    let r = client::call(&path, &Request::Status {}, Duration::from_secs(5)).unwrap();
    assert_eq!(
        r,
        Response::ok(serde_json::json!([{"id": "console", "kind": "uart"}]))
    );
}

#[test]
fn target_errors_come_back_typed() {
    let (_d, path, _g) = server();
    let r = client::call(
        &path,
        &Request::Detach {
            id: "x".into(),
            force: false,
            timeout_ms: None,
        },
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!r.ok);
    assert_eq!(
        r.error,
        Some(ApiError::new(ErrorKind::NotFound, "no device x"))
    );
}

#[test]
fn malformed_and_unknown_requests_are_bad_requests_and_the_connection_survives() {
    let (_d, path, _g) = server();
    let mut s = UnixStream::connect(&path).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for bad in [
        "not json\n",
        "{\"op\": \"reboot\"}\n",
        "{\"op\": \"status\", \"extra\": 1}\n",
        "{\"op\": \"detach\"}\n",
        "[1,2,3]\n",
    ] {
        s.write_all(bad.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let r: Response = serde_json::from_str(&reply).unwrap();
        assert_eq!(
            r.error.map(|e| e.kind),
            Some(ErrorKind::BadRequest),
            "for {bad:?}"
        );
    }
    s.write_all(b"{\"op\": \"status\"}\n").unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"));
}

#[test]
fn non_utf8_request_is_rejected() {
    let (_d, path, _g) = server();
    let reply = raw_exchange(&path, b"\xff\xfe\n");
    assert!(reply.contains("not UTF-8"), "{reply}");
}

#[test]
fn oversized_request_is_rejected_without_reading_it_all_into_memory() {
    let (_d, path, _g) = server();
    let mut s = UnixStream::connect(&path).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut reader = BufReader::new(s.try_clone().unwrap());
    // The server answers once the limit is crossed and closes the connection;
    // writes after that may fail, which is fine.
    for _ in 0..(MAX_REQUEST / chunk.len() + 2) {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert!(reply.contains("request longer than"), "{reply}");
}

#[test]
fn socket_and_directory_are_owner_only() {
    let (_d, path, _g) = server();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn binding_a_live_socket_fails_and_a_stale_one_is_replaced() {
    let (_d, path, guard) = server();
    assert!(matches!(
        ApiServer::bind(&path),
        Err(ApiSetupError::InUse(_))
    ));
    drop(guard);
    assert!(!path.exists(), "guard removes the socket file");
    // A stale socket file with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    ApiServer::bind(&path).unwrap();
}

#[test]
fn requests_round_trip_through_json() {
    for r in [
        Request::Status {},
        Request::Devices {},
        Request::Attach {
            device: toml::Value::try_from(serde_json::json!({"uart": [{"id": "u1"}]})).unwrap(),
            base_dir: Some("/cells".into()),
            timeout_ms: Some(500),
        },
        Request::Detach {
            id: "hot0".into(),
            force: true,
            timeout_ms: None,
        },
    ] {
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_request(&text).unwrap(), r);
    }
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell.toml");
    std::fs::write(&path, "name = \"precious\"\n").unwrap();
    assert!(matches!(
        ApiServer::bind(&path),
        Err(ApiSetupError::NotASocket(_))
    ));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "name = \"precious\"\n"
    );
}

#[test]
fn a_runtime_directory_others_may_write_to_or_own_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = ApiServer::bind(&open.join("t.sock"))
        .err()
        .expect("refused");
    assert!(matches!(e, ApiSetupError::UnsafeDir { .. }), "{e}");
    assert!(e.to_string().contains("mode is 777"), "{e}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = ApiServer::bind(&theirs.join("t.sock"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
    assert!(!open.join("t.sock").exists());
}

#[test]
fn a_client_that_trickles_bytes_is_cut_off_at_the_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("t.sock");
    let _guard = ApiServer::bind(&path)
        .unwrap()
        .with_idle_timeout(Duration::from_millis(300))
        .spawn(Arc::new(Echo))
        .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    let started = std::time::Instant::now();
    // One byte every 50 ms never completes a line; each read alone is fast.
    let mut closed = false;
    for _ in 0..100 {
        if s.write_all(b" ").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "the server kept a trickling connection for 5 s");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A target whose `attach` waits until released, as an attach waits for
/// the guest.
struct SlowAttach {
    release: Mutex<mpsc::Receiver<()>>,
}

impl ControlTarget for SlowAttach {
    fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        if let Request::Attach { .. } = request {
            let _ = self.release.lock().unwrap().recv();
        }
        Ok(Reply::Devices(vec![]))
    }
}

#[test]
fn status_is_answered_while_a_change_waits_for_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let (release, wait) = mpsc::channel();
    let _guard = ApiServer::bind(&path)
        .unwrap()
        .spawn(Arc::new(SlowAttach {
            release: Mutex::new(wait),
        }))
        .unwrap();
    let attach = Request::Attach {
        device: toml::Value::try_from(serde_json::json!({"uart": [{"id": "u"}]})).unwrap(),
        base_dir: None,
        timeout_ms: None,
    };
    let p = path.clone();
    let waiting = std::thread::spawn(move || client::call(&p, &attach, Duration::from_secs(10)));
    let r = client::call(&path, &Request::Status {}, Duration::from_secs(5)).unwrap();
    assert!(r.ok);
    assert!(!waiting.is_finished(), "the attach is still waiting");
    release.send(()).unwrap();
    assert!(waiting.join().unwrap().unwrap().ok);
}

#[test]
fn connections_beyond_the_limit_are_told_busy() {
    let (_d, path, _g) = server();
    let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // The accept loop handles connections in order: by the time this one is
    // accepted the others hold every slot.
    let reply = raw_exchange(&path, b"{\"op\": \"status\"}\n");
    assert!(reply.contains("\"busy\""), "{reply}");
    drop(idle);
}

/// A fake cell that answers with `answer` (and then stays silent).
fn fake_cell(answer: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&answer);
            // Keep the connection open without a newline.
            let mut sink = [0u8; 64];
            while s.read(&mut sink).is_ok_and(|n| n > 0) {}
        }
    });
    (dir, path)
}

#[test]
fn the_client_refuses_an_endless_answer_and_bounds_a_silent_one() {
    let (_d, path) = fake_cell(vec![b'x'; protocol::MAX_RESPONSE + 10]);
    let e = client::call(&path, &Request::Status {}, Duration::from_secs(20)).unwrap_err();
    assert!(e.contains("answer longer than"), "{e}");
    let (_d, path) = fake_cell(b"{\"ok\": tr".to_vec());
    let started = std::time::Instant::now();
    let e = client::call(&path, &Request::Status {}, Duration::from_millis(300)).unwrap_err();
    assert!(e.contains("no answer within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn error_kind_names_are_the_names_scripts_see_in_json() {
    for kind in ErrorKind::ALL {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
}

#[test]
fn a_move_request_parses_with_its_receiving_cell() {
    let r = parse_request(r#"{"op": "move", "id": "flash0", "to": "bmc"}"#).unwrap();
    assert_eq!(
        r,
        Request::Move {
            id: "flash0".into(),
            to: "bmc".into(),
            timeout_ms: None
        }
    );
}
