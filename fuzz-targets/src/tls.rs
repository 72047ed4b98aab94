//! A TLS server connection of an `https` listener, given whatever a client sends first.

use crate::shown;
use lab_lb::tls_fuzzing::{Answer, Server};
use std::io::ErrorKind;
use std::sync::OnceLock;

/// The most a TLS record may carry (2^14 plus what TLS 1.2 allows for compression and MAC).
const MAX_RECORD: usize = (1 << 14) + 2048;
const ALERT: u8 = 21;
const APPLICATION_DATA: u8 = 23;

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
/// stream has (no hang, no panic); what the server sent is whole TLS records; and a handshake
/// refused for the client's bytes says so with an alert, its last record.
pub fn tls_server(data: &[u8]) {
    let Answer { sent, handshake } = server().handshake(data).expect("loopback connection");
    let handshake = handshake
        .unwrap_or_else(|| panic!("the handshake waits past the client's end: {}", shown(data)));
    let records =
        records(&sent).unwrap_or_else(|e| panic!("{e} in {:?} for {}", sent, shown(data)));
    match handshake {
        // No client's bytes finish a handshake without the server's random to answer.
        Ok(()) => panic!("a handshake completed with {}", shown(data)),
        Err(e) if e.kind() == ErrorKind::InvalidData && !client_alerted(&e) => {
            // Once the server's flight is encrypted (TLS 1.3), so is its alert: a record of
            // application data, like the ones before it.
            let alerted = match records.last() {
                Some(&ALERT) => true,
                Some(&APPLICATION_DATA) => records.contains(&APPLICATION_DATA),
                _ => false,
            };
            assert!(alerted, "refused ({e}) without an alert: {}", shown(data));
        }
        Err(_) => {}
    }
}

/// The client's own fatal alert ended it: nothing is said back.
fn client_alerted(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)))
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
