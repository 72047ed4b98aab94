//! A TLS server connection of an `https` listener, given whatever a client sends first.

use crate::shown;
use lab_lb::tls_fuzzing::{Answer, Server};
use std::sync::{Arc, OnceLock};

/// The most a TLS record may carry (2^14 plus what TLS 1.2 allows for compression and MAC).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// One server for the process, on a certificate made for it.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lab-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let made = rcgen::generate_simple_self_signed(vec!["fuzz.test".to_owned()])
            .expect("a self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("certificate file");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("key file");
        let server = Server::new(&cert, &key).expect("a TLS server");
        let _ = std::fs::remove_dir_all(&dir);
        server
    })
}

/// `lab_lb::tls_fuzzing`: whatever the client sends, the handshake ends once the client's
/// stream has (no hang, no panic); what the server sent is whole TLS records, the same kinds in
/// the same order as rustls's own buffered connection sends for the same bytes on the same
/// config (so the alert it queues on a refusal goes out, and nothing more).
pub fn tls_server(data: &[u8]) {
    let server = server();
    let Answer { sent, handshake } = server.handshake(data).expect("loopback connection");
    let handshake = handshake
        .unwrap_or_else(|| panic!("the handshake waits past the client's end: {}", shown(data)));
    // No client's bytes finish a handshake without the server's random to answer.
    assert!(
        handshake.is_err(),
        "a handshake completed with {}",
        shown(data)
    );
    let ours = records(&sent).unwrap_or_else(|e| panic!("{e} in {sent:?} for {}", shown(data)));
    let reference = reference_answer(server.config(), data);
    let theirs = records(&reference).expect("rustls's own records");
    assert_eq!(
        ours,
        theirs,
        "record kinds sent, ours and rustls's buffered connection's ({handshake:?}): {}",
        shown(data)
    );
}

/// What rustls's buffered server connection sends given `data`, read as far as it goes.
fn reference_answer(config: Arc<rustls::ServerConfig>, mut data: &[u8]) -> Vec<u8> {
    let mut connection = rustls::ServerConnection::new(config).expect("a server connection");
    while !data.is_empty() {
        match connection.read_tls(&mut data) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if connection.process_new_packets().is_err() {
            break;
        }
    }
    let mut sent = Vec::new();
    while connection.wants_write() {
        match connection.write_tls(&mut sent) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    sent
}

/// The content types of the records that make up `sent`, which must be whole records.
fn records(mut sent: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    while !sent.is_empty() {
        let [kind, major, _, high, low, ..] = *sent else {
            return Err(format!("a record header cut at {} bytes", sent.len()));
        };
        let length = usize::from(u16::from_be_bytes([high, low]));
        if !(20..=23).contains(&kind) || major != 3 || length > MAX_RECORD {
            return Err(format!("a record header {:?}", &sent[..5]));
        }
        if sent.len() < 5 + length {
            return Err(format!(
                "a record of {length} bytes cut at {}",
                sent.len() - 5
            ));
        }
        types.push(kind);
        sent = &sent[5 + length..];
    }
    Ok(types)
}
