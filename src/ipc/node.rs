//! Node.js's IPC protocol, as an unmodified Node cluster worker speaks it over its channel
//! (`NODE_CHANNEL_FD`, `NODE_CHANNEL_SERIALIZATION_MODE=json`): one JSON value per line,
//! fds passed with `SCM_RIGHTS`, one per `NODE_HANDLE` line. Node defines it in
//! `lib/internal/child_process.js` and `lib/internal/cluster/`; the lines the tests below
//! decode were captured from Node 20.20.2 talking to its own primary.
//!
//! Decoding is a pure function of one line ([`decode`]), so that it can be fuzzed: a line that
//! is not JSON, not UTF-8, or an internal message with fields of the wrong type is an error,
//! which ends that worker's channel and never the primary. Internal messages the primary has
//! no use for (other `NODE_` commands, unknown `act`s) decode to [`FromWorker::Ignored`], as
//! Node ignores them. Encoding writes exactly the lines Node's own primary writes.

use serde_json::{Value, json};

/// The longest line taken from a worker. Node sets no limit; a primary must, or one worker
/// could make it buffer without end.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// What one line from a Node worker says.
#[derive(Clone, Debug, PartialEq)]
pub enum FromWorker {
    /// A message of the application's (`process.send(value)`), not internal.
    User(Value),
    /// A message sent with a handle (`{"cmd":"NODE_HANDLE","type":…,"msg":…}`): the fd that
    /// came with the line is the handle; `msg` is the message it wraps.
    Handle {
        /// Node's handle type (`net.Native`, `net.Socket`, `dgram.Native`…).
        kind: String,
        /// The wrapped message.
        msg: Box<FromWorker>,
    },
    /// The worker took the handle of the primary's last `NODE_HANDLE` line.
    HandleAck,
    /// The worker got a `NODE_HANDLE` line without its fd (or one it could not use).
    HandleNack,
    /// A cluster message (`cmd: NODE_CLUSTER`).
    Cluster {
        /// Its sequence number (the worker's counter), which a reply acknowledges.
        seq: u64,
        /// What it says.
        body: Cluster,
    },
    /// Internal, and nothing the primary acts on.
    Ignored,
}

/// A cluster message from a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Cluster {
    /// The worker started (`act: online`), before its application's code.
    Online,
    /// `server.listen()` or `dgram.bind()` asks for a listening handle (`act: queryServer`).
    QueryServer(Query),
    /// The server listens (`act: listening`), with the port it got.
    Listening(Query),
    /// A server closed (`act: close`).
    Close {
        /// Its key, as the primary gave it.
        key: String,
    },
    /// The worker disconnects by its own choice and waits for the primary's reply
    /// (`act: exitedAfterDisconnect`).
    ExitedAfterDisconnect,
    /// A reply to the primary's message `ack` (no `act`): to a `newconn`, with `accepted`.
    Reply {
        /// The `seq` of the primary's message.
        ack: u64,
        /// Whether the worker took the connection (replies to `newconn`).
        accepted: Option<bool>,
    },
}

/// What kind of socket a query is for (`addressType` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    /// TCP over IPv4 (`4`).
    Tcp4,
    /// TCP over IPv6 (`6`).
    Tcp6,
    /// A Unix stream socket at a path (`-1`).
    Pipe,
    /// UDP over IPv4 (`"udp4"`).
    Udp4,
    /// UDP over IPv6 (`"udp6"`).
    Udp6,
    /// A socket the primary holds at the number `fd` (`listen({fd})`: `null`).
    Fd,
}

/// A `queryServer` or `listening` message: the listen's options, each kept as it came (absent
/// or `null` matter: the key spells them as JavaScript strings them).
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The worker's index for its (address, port, type, fd) tuple.
    pub index: u64,
    /// The server's data (TLS session-ticket keys), stored and echoed by the primary.
    pub data: Value,
    /// The socket kind.
    pub address_type: AddressType,
    /// `address`: absent (`None`), or its value (`null`, or a string).
    pub address: Option<Value>,
    /// `port`: absent, or its value (a number; `-1` for pipes; `null` for `{fd}`).
    pub port: Option<Value>,
    /// `fd`: absent (TCP), or its value (`-1` for UDP, a number for `{fd}`).
    pub fd: Option<Value>,
    /// `flags` (`UV_TCP_IPV6ONLY` = 1; UDP's reuse-address and IPv6-only bits).
    pub flags: u64,
    /// `backlog`, when it is a positive number (any falsy value means the default).
    pub backlog: Option<i32>,
    /// Unix sockets: everyone may read / write (`readableAll`, `writableAll`).
    pub readable_all: bool,
    /// See `readable_all`.
    pub writable_all: bool,
}

/// Why a line from a worker was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Longer than [`MAX_LINE`].
    TooLong(usize),
    /// Not JSON (Node's own reader dies of this).
    NotJson(String),
    /// An internal message with a field missing or of the wrong type.
    BadField {
        /// The message's `cmd`/`act`.
        message: String,
        /// The field.
        field: &'static str,
    },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong(n) => write!(f, "a line of {n} bytes, beyond {MAX_LINE}"),
            LineError::NotJson(e) => write!(f, "a line that is not JSON: {e}"),
            LineError::BadField { message, field } => {
                write!(f, "a {message} message with a bad or missing {field:?}")
            }
        }
    }
}

impl std::error::Error for LineError {}

/// Whether Node counts `value` as internal: an object whose `cmd` is a string starting with
/// `NODE_` and longer than 5 characters (decided by content alone, as Node does).
fn internal_cmd(value: &Value) -> Option<&str> {
    let cmd = value.get("cmd")?.as_str()?;
    (cmd.starts_with("NODE_") && cmd.len() > 5).then_some(cmd)
}

/// Decodes one line (without its `\n`).
///
/// # Errors
/// [`LineError`] for a line that is too long, not JSON, or an internal message the primary
/// would act on with a field it cannot read.
pub fn decode(line: &[u8]) -> Result<FromWorker, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong(line.len()));
    }
    let value: Value =
        serde_json::from_slice(line).map_err(|e| LineError::NotJson(e.to_string()))?;
    interpret(value, 0)
}

/// What a decoded value says; `depth` bounds nested `NODE_HANDLE` wrappers.
fn interpret(value: Value, depth: u8) -> Result<FromWorker, LineError> {
    let Some(cmd) = internal_cmd(&value) else {
        return Ok(FromWorker::User(value));
    };
    match cmd {
        "NODE_HANDLE_ACK" => Ok(FromWorker::HandleAck),
        "NODE_HANDLE_NACK" => Ok(FromWorker::HandleNack),
        "NODE_HANDLE" if depth == 0 => {
            let bad = |field| LineError::BadField {
                message: "NODE_HANDLE".into(),
                field,
            };
            let kind = value
                .get("type")
                .and_then(Value::as_str)
                .ok_or(bad("type"))?
                .to_owned();
            let msg = value.get("msg").cloned().ok_or(bad("msg"))?;
            Ok(FromWorker::Handle {
                kind,
                msg: Box::new(interpret(msg, depth + 1)?),
            })
        }
        "NODE_CLUSTER" => cluster(&value),
        _ => Ok(FromWorker::Ignored),
    }
}

fn cluster(value: &Value) -> Result<FromWorker, LineError> {
    let act = value.get("act").and_then(Value::as_str);
    let bad = |field| LineError::BadField {
        message: format!("NODE_CLUSTER {}", act.unwrap_or("reply")),
        field,
    };
    let seq = value.get("seq").and_then(Value::as_u64).ok_or(bad("seq"))?;
    let body = match act {
        Some("online") => Cluster::Online,
        Some("queryServer") => Cluster::QueryServer(query(value).map_err(bad)?),
        Some("listening") => Cluster::Listening(query(value).map_err(bad)?),
        Some("close") => Cluster::Close {
            key: value
                .get("key")
                .and_then(Value::as_str)
                .ok_or(bad("key"))?
                .to_owned(),
        },
        Some("exitedAfterDisconnect") => Cluster::ExitedAfterDisconnect,
        Some(_) => return Ok(FromWorker::Ignored),
        None => match value.get("ack") {
            Some(ack) => Cluster::Reply {
                ack: ack.as_u64().ok_or(bad("ack"))?,
                accepted: value.get("accepted").and_then(Value::as_bool),
            },
            None => return Ok(FromWorker::Ignored),
        },
    };
    Ok(FromWorker::Cluster { seq, body })
}

fn query(value: &Value) -> Result<Query, &'static str> {
    let address_type = match value.get("addressType") {
        Some(Value::Number(n)) if n.as_i64() == Some(4) => AddressType::Tcp4,
        Some(Value::Number(n)) if n.as_i64() == Some(6) => AddressType::Tcp6,
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => AddressType::Pipe,
        Some(Value::String(s)) if s == "udp4" => AddressType::Udp4,
        Some(Value::String(s)) if s == "udp6" => AddressType::Udp6,
        Some(Value::Null) => AddressType::Fd,
        _ => return Err("addressType"),
    };
    let index = value.get("index").and_then(Value::as_u64).ok_or("index")?;
    let number_or_null = |v: &Value| v.is_null() || v.is_number();
    let address = value.get("address").cloned();
    if address
        .as_ref()
        .is_some_and(|a| !(a.is_null() || a.is_string()))
    {
        return Err("address");
    }
    let port = value.get("port").cloned();
    if port.as_ref().is_some_and(|p| !number_or_null(p)) {
        return Err("port");
    }
    let fd = value.get("fd").cloned();
    if fd.as_ref().is_some_and(|f| !number_or_null(f)) {
        return Err("fd");
    }
    let flags = value.get("flags").and_then(Value::as_u64).unwrap_or(0);
    // Any falsy backlog (absent, false, 0, null) is the default.
    let backlog = value
        .get("backlog")
        .and_then(Value::as_i64)
        .filter(|b| *b > 0)
        .map(|b| i32::try_from(b).unwrap_or(i32::MAX));
    let truthy = |k: &str| value.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(Query {
        index,
        data: value.get("data").cloned().unwrap_or(Value::Null),
        address_type,
        address,
        port,
        fd,
        flags,
        backlog,
        readable_all: truthy("readableAll"),
        writable_all: truthy("writableAll"),
    })
}

/// A field as JavaScript's template strings spell it: `undefined` when absent.
fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl Query {
    /// The handle's key, as Node 20's primary builds it:
    /// `address:port:addressType:fd:index`. Keys must be unique per live server in a worker
    /// (its `child.js` asserts it); this form, with the index, always is. (Node after
    /// nodejs/node#60141 drops `:index` when the port is not 0; a worker treats the key as
    /// opaque, so either form works with every Node version.)
    pub fn key(&self) -> String {
        let address_type = match self.address_type {
            AddressType::Tcp4 => "4",
            AddressType::Tcp6 => "6",
            AddressType::Pipe => "-1",
            AddressType::Udp4 => "udp4",
            AddressType::Udp6 => "udp6",
            AddressType::Fd => "null",
        };
        format!(
            "{}:{}:{address_type}:{}:{}",
            js_string(self.address.as_ref()),
            js_string(self.port.as_ref()),
            js_string(self.fd.as_ref()),
            self.index
        )
    }

    /// The address, if it is a string.
    pub fn address(&self) -> Option<&str> {
        self.address.as_ref().and_then(Value::as_str)
    }

    /// The port, if it is a number in range (`listen(0)`: 0).
    pub fn port(&self) -> Option<u16> {
        self.port
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
    }

    /// The fd number of a `listen({fd})` query.
    pub fn fd(&self) -> Option<i32> {
        self.fd
            .as_ref()
            .and_then(Value::as_i64)
            .and_then(|f| i32::try_from(f).ok())
            .filter(|f| *f >= 0)
    }
}

/// A line to a worker, with the newline.
fn line(value: &Value) -> String {
    let mut s = value.to_string();
    s.push('\n');
    s
}

/// The primary's messages to a Node worker. Each carries the primary's `seq` (one counter
/// for all workers, as in Node) and, for replies, `ack`: the worker's `seq`.
pub mod to_worker {
    use super::{Value, json, line};

    /// Where a round-robin listener is bound (`sockname` of the reply).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Sockname {
        /// The address.
        pub address: String,
        /// `IPv4` or `IPv6`.
        pub family: &'static str,
        /// The port.
        pub port: u16,
    }

    /// The reply to a round-robin `queryServer`: a plain line, no fd; the worker's server
    /// gets connections as `newconn` lines. `sockname` for TCP, `None` for pipes.
    pub fn reply_round_robin(
        ack: u64,
        seq: u64,
        key: &str,
        data: &Value,
        sockname: Option<&Sockname>,
    ) -> String {
        let mut v =
            json!({"cmd": "NODE_CLUSTER", "errno": null, "key": key, "ack": ack, "data": data});
        if let Some(s) = sockname {
            v["sockname"] = json!({"address": s.address, "family": s.family, "port": s.port});
        }
        v["seq"] = json!(seq);
        line(&v)
    }

    /// The reply to a shared `queryServer`, to be sent with the listening socket as its fd
    /// (`dgram.Native` for UDP, `net.Native` otherwise).
    pub fn reply_shared(ack: u64, seq: u64, key: &str, data: &Value, udp: bool) -> String {
        let kind = if udp { "dgram.Native" } else { "net.Native" };
        line(&json!({
            "cmd": "NODE_HANDLE",
            "type": kind,
            "msg": {"cmd": "NODE_CLUSTER", "errno": 0, "key": key, "ack": ack, "data": data, "seq": seq},
        }))
    }

    /// The reply to a `queryServer` whose bind failed: `errno` as libuv has it (negative).
    pub fn reply_error(ack: u64, seq: u64, key: &str, data: &Value, errno: i32) -> String {
        line(&json!({
            "cmd": "NODE_CLUSTER", "errno": -errno.abs(), "key": key, "ack": ack, "data": data, "seq": seq,
        }))
    }

    /// A connection for the worker's round-robin server `key`, to be sent with the
    /// connection as its fd; the worker answers `NODE_HANDLE_ACK`, then a reply with
    /// `accepted`.
    pub fn newconn(seq: u64, key: &str) -> String {
        line(&json!({
            "cmd": "NODE_HANDLE",
            "type": "net.Native",
            "msg": {"cmd": "NODE_CLUSTER", "act": "newconn", "key": key, "seq": seq},
        }))
    }

    /// Asks the worker to disconnect gracefully.
    pub fn disconnect(seq: u64) -> String {
        line(&json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": seq}))
    }

    /// A bare reply (to `exitedAfterDisconnect`).
    pub fn ack(ack: u64, seq: u64) -> String {
        line(&json!({"cmd": "NODE_CLUSTER", "ack": ack, "seq": seq}))
    }

    /// The primary took a handle the worker sent with a message.
    pub fn handle_ack() -> String {
        line(&json!({"cmd": "NODE_HANDLE_ACK"}))
    }

    /// A message of the application's (`worker.send(value)`).
    pub fn user(value: &Value) -> String {
        line(value)
    }
}

/// Splits a worker's bytes into lines, as Node's reader does, bounded by [`MAX_LINE`].
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the search for the next newline resumes.
    scanned: usize,
}

impl Lines {
    /// Adds bytes read from the channel.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole line, without its newline; `Ok(None)` until one is complete.
    ///
    /// # Errors
    /// [`LineError::TooLong`] once a line grows past [`MAX_LINE`] without ending.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        match self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                self.scanned = 0;
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(LineError::TooLong(self.buf.len())),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Whether a partial line waits (Node's `channel.buffering`).
    pub fn buffering(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(line: &str) -> FromWorker {
        decode(line.as_bytes()).expect("decodes")
    }

    #[test]
    fn the_captured_round_robin_session_decodes() {
        // Captured from Node v20.20.2: a round-robin session's worker side.
        assert_eq!(
            decoded(r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#),
            FromWorker::Cluster {
                seq: 0,
                body: Cluster::Online
            }
        );
        let q = decoded(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"flags":0,"backlog":0,"seq":1}"#,
        );
        let FromWorker::Cluster {
            seq: 1,
            body: Cluster::QueryServer(query),
        } = q
        else {
            panic!("{q:?}")
        };
        assert_eq!(query.key(), "127.0.0.1:0:4:undefined:0");
        assert_eq!(query.address(), Some("127.0.0.1"));
        assert_eq!(query.port(), Some(0));
        assert_eq!(query.backlog, None, "a zero backlog is the default");
        assert_eq!(
            decoded(r#"{"cmd":"NODE_HANDLE_ACK"}"#),
            FromWorker::HandleAck
        );
        assert_eq!(
            decoded(r#"{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":3}"#),
            FromWorker::Cluster {
                seq: 3,
                body: Cluster::Reply {
                    ack: 1,
                    accepted: Some(true)
                }
            }
        );
        assert_eq!(
            decoded(
                r#"{"cmd":"NODE_CLUSTER","act":"close","key":"127.0.0.1:0:4:undefined:0","seq":4}"#
            ),
            FromWorker::Cluster {
                seq: 4,
                body: Cluster::Close {
                    key: "127.0.0.1:0:4:undefined:0".into()
                }
            }
        );
    }

    #[test]
    fn keys_spell_absent_and_null_fields_as_javascript_does() {
        let key = |line: &str| match decoded(line) {
            FromWorker::Cluster {
                body: Cluster::QueryServer(q),
                ..
            } => q.key(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(
                r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":0,"addressType":4,"backlog":0,"seq":1}"#
            ),
            "null:0:4:undefined:0"
        );
        assert_eq!(
            key(
                r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"0.0.0.0","port":0,"addressType":"udp4","fd":-1,"flags":0,"seq":2}"#
            ),
            "0.0.0.0:0:udp4:-1:0"
        );
        assert_eq!(
            key(
                r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":1,"data":null,"address":"/tmp/s","port":-1,"addressType":-1,"seq":5}"#
            ),
            "/tmp/s:-1:-1:undefined:1"
        );
        assert_eq!(
            key(
                r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":null,"addressType":null,"fd":7,"seq":5}"#
            ),
            "null:null:null:7:0"
        );
    }

    #[test]
    fn user_messages_and_foreign_internal_ones() {
        assert_eq!(decoded(r#""bye""#), FromWorker::User(json!("bye")));
        assert_eq!(
            decoded(r#"{"cmd":"NODE_x","a":1}"#),
            FromWorker::Ignored,
            "internal by its cmd, and nothing the primary acts on"
        );
        assert_eq!(
            decoded(r#"{"cmd":"NODE_"}"#),
            FromWorker::User(json!({"cmd": "NODE_"})),
            "five characters are not enough to be internal"
        );
        assert_eq!(
            decoded(r#"{"cmd":"NODE_CLUSTER","act":"what","seq":1}"#),
            FromWorker::Ignored
        );
        let handle = decoded(r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"x":1}}"#);
        assert_eq!(
            handle,
            FromWorker::Handle {
                kind: "net.Socket".into(),
                msg: Box::new(FromWorker::User(json!({"x": 1})))
            }
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        assert!(matches!(decode(b"not json"), Err(LineError::NotJson(_))));
        assert!(matches!(decode(&[0xff, 0xfe]), Err(LineError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"cmd":"NODE_CLUSTER","act":"online"}"#),
            Err(LineError::BadField { field: "seq", .. })
        ));
        assert!(matches!(
            decode(br#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"addressType":"tcp9","seq":1}"#),
            Err(LineError::BadField { field: "addressType", .. })
        ));
        assert!(matches!(
            decode(br#"{"cmd":"NODE_CLUSTER","act":"close","seq":1}"#),
            Err(LineError::BadField { field: "key", .. })
        ));
        assert!(matches!(
            decode(br#"{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_HANDLE","type":"x","msg":1}}"#),
            Ok(FromWorker::Handle { .. })
        ));
    }

    #[test]
    fn the_primary_writes_what_nodes_primary_writes() {
        let data = Value::Null;
        let sockname = to_worker::Sockname {
            address: "127.0.0.1".into(),
            family: "IPv4",
            port: 41657,
        };
        let reply =
            to_worker::reply_round_robin(1, 0, "127.0.0.1:0:4:undefined:0", &data, Some(&sockname));
        let v: Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!(
            v,
            json!({"cmd":"NODE_CLUSTER","errno":null,"key":"127.0.0.1:0:4:undefined:0","ack":1,"data":null,"sockname":{"address":"127.0.0.1","family":"IPv4","port":41657},"seq":0})
        );
        assert!(reply.ends_with('\n') && reply.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&to_worker::newconn(1, "k")).expect("JSON");
        assert_eq!(
            v,
            json!({"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":1}})
        );
        let v: Value =
            serde_json::from_str(&to_worker::reply_error(2, 5, "k", &data, 98)).expect("JSON");
        assert_eq!(v["errno"], json!(-98));
        let v: Value =
            serde_json::from_str(&to_worker::reply_shared(1, 3, "k", &json!({"t": 1}), true))
                .expect("JSON");
        assert_eq!(v["type"], json!("dgram.Native"));
        assert_eq!(
            v["msg"]["data"],
            json!({"t": 1}),
            "the stored data is echoed"
        );
    }

    #[test]
    fn lines_split_as_nodes_reader_does() {
        let mut lines = Lines::default();
        lines.push(br#"{"a":"#);
        assert_eq!(lines.next_line(), Ok(None));
        assert!(lines.buffering());
        lines.push(b"1}\n\"b\"\n\"c");
        assert_eq!(lines.next_line(), Ok(Some(br#"{"a":1}"#.to_vec())));
        assert_eq!(lines.next_line(), Ok(Some(b"\"b\"".to_vec())));
        assert_eq!(lines.next_line(), Ok(None));
        lines.push(b"\"\n");
        assert_eq!(lines.next_line(), Ok(Some(b"\"c\"".to_vec())));
        assert!(!lines.buffering());
    }
}
