//! The control channel's frame format: a pure encoder and decoder, no I/O.
//!
//! ```text
//! 0       4      5      6      8
//! +-------+------+------+------+----------------+
//! |  len  | kind | nfds | "rl" | payload (len)  |
//! +-------+------+------+------+----------------+
//! ```
//! `len` is the payload length, little-endian, at most [`MAX_PAYLOAD`]. `kind` 0 is a user
//! message; other kinds are the internal messages of [`Kind`]. `nfds` is how many fds belong
//! to this frame (at most [`MAX_FDS_PER_FRAME`]); they travel with the `sendmsg` that carries the
//! frame's first byte, so the receiver hands them out in frame order. The two magic bytes catch
//! a stream that lost its framing.

use std::fmt;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// The largest payload a frame may carry: 16 MiB.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// The most fds one frame may carry.
pub const MAX_FDS_PER_FRAME: u8 = 1;
const MAGIC: [u8; 2] = *b"rl";

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// An application message: payload bytes and at most one fd.
    User = 0,
    /// Worker to primary, first frame: the worker has started (Node: `act: 'online'`).
    Online = 1,
    /// Worker to primary: the worker is disconnecting by its own choice and waits for the
    /// primary to acknowledge by shutting down its writing half (Node:
    /// `act: 'exitedAfterDisconnect'`).
    Disconnecting = 2,
    /// Worker to primary: please listen for me (Node: `act: 'queryServer'`); JSON payload.
    Listen = 3,
    /// Primary to worker: the answer to a `Listen`, with the hand-off channel or the shared
    /// socket as its fd, or an errno; JSON payload.
    ListenReply = 4,
    /// Worker to primary: the listener is up (Node: `act: 'listening'`); JSON payload.
    Listening = 5,
    /// Worker to primary: a listener was closed (Node: `act: 'close'`); JSON payload.
    Close = 6,
    /// Worker to primary: a connection handed back, its fd attached (Node: `accepted:
    /// false`); JSON payload.
    Reject = 7,
    /// Worker to primary: the worker is ready to serve, having warmed up
    /// ([`Worker::ready`](crate::Worker::ready)); no payload.
    Ready = 8,
}

/// The largest payload of an internal frame.
pub const MAX_INTERNAL_PAYLOAD: usize = 4096;

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::User,
            1 => Kind::Online,
            2 => Kind::Disconnecting,
            3 => Kind::Listen,
            4 => Kind::ListenReply,
            5 => Kind::Listening,
            6 => Kind::Close,
            7 => Kind::Reject,
            8 => Kind::Ready,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// fds that belong to it.
    pub nfds: u8,
    /// Payload length.
    pub len: usize,
}

impl Header {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The magic bytes are wrong: the stream is not ringleader framing, or lost its place.
    BadMagic([u8; 2]),
    /// An unknown kind byte.
    UnknownKind(u8),
    /// A payload longer than [`MAX_PAYLOAD`].
    TooLarge(usize),
    /// More fds than a frame of this kind may carry.
    TooManyFds(u8),
    /// An internal frame with a payload it must not have.
    UnexpectedPayload(Kind),
    /// The frame says it carries an fd, but none arrived with it.
    MissingFd,
    /// The peer sent fds that no frame claimed.
    StrayFds(usize),
    /// An internal frame whose payload does not parse.
    BadPayload,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad frame magic {m:02x?}"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLarge(n) => {
                write!(
                    f,
                    "frame payload of {n} bytes exceeds the limit of {MAX_PAYLOAD}"
                )
            }
            FrameError::TooManyFds(n) => write!(f, "frame claims {n} fds"),
            FrameError::UnexpectedPayload(k) => {
                write!(f, "{k:?} frame with a payload too long for it")
            }
            FrameError::MissingFd => f.write_str("frame claims an fd that did not arrive"),
            FrameError::StrayFds(n) => write!(f, "{n} fds arrived that no frame claims"),
            FrameError::BadPayload => {
                f.write_str("internal frame with a payload that does not parse")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes a header. The caller guarantees `len <= MAX_PAYLOAD` (see [`check`]).
pub fn encode_header(kind: Kind, nfds: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    [
        len[0], len[1], len[2], len[3], kind as u8, nfds, MAGIC[0], MAGIC[1],
    ]
}

/// Checks that a frame may be sent.
///
/// # Errors
/// [`FrameError::TooLarge`], [`FrameError::TooManyFds`], [`FrameError::UnexpectedPayload`].
pub fn check(kind: Kind, nfds: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let (max_len, max_fds) = match kind {
        Kind::User => (MAX_PAYLOAD, MAX_FDS_PER_FRAME),
        Kind::Online | Kind::Disconnecting | Kind::Ready => (0, 0),
        Kind::ListenReply | Kind::Reject => (MAX_INTERNAL_PAYLOAD, 1),
        Kind::Listen | Kind::Listening | Kind::Close => (MAX_INTERNAL_PAYLOAD, 0),
    };
    if nfds > max_fds {
        Err(FrameError::TooManyFds(nfds))
    } else if len > max_len {
        Err(FrameError::UnexpectedPayload(kind))
    } else {
        Ok(())
    }
}

/// Decodes the header at the start of `buf`: `Ok(None)` when fewer than [`HEADER_LEN`] bytes
/// are there. A header is rejected as soon as it is complete, before its payload arrives, so a
/// peer cannot make the receiver buffer an oversized frame.
///
/// # Errors
/// Any [`FrameError`] about the header.
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if h[6..8] != MAGIC {
        return Err(FrameError::BadMagic([h[6], h[7]]));
    }
    let kind = Kind::from_u8(h[4]).ok_or(FrameError::UnknownKind(h[4]))?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let nfds = h[5];
    check(kind, nfds, len)?;
    Ok(Some(Header { kind, nfds, len }))
}

/// What [`decode_all`] found.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    /// Whole frames: header and payload.
    pub frames: Vec<(Header, &'a [u8])>,
    /// Bytes those frames took.
    pub consumed: usize,
    /// The error that stopped decoding, if any.
    pub error: Option<FrameError>,
}

/// Splits `buf` into whole frames from the start. Pure; the fuzz target's entry point.
pub fn decode_all(buf: &[u8]) -> Decoded<'_> {
    let mut out = Decoded::default();
    loop {
        let at = out.consumed;
        match decode_header(&buf[at..]) {
            Ok(Some(h)) if buf.len() - at >= h.frame_len() => {
                out.frames
                    .push((h, &buf[at + HEADER_LEN..at + h.frame_len()]));
                out.consumed += h.frame_len();
            }
            Ok(_) => return out,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = encode_header(Kind::User, 1, 300);
        assert_eq!(
            decode_header(&h),
            Ok(Some(Header {
                kind: Kind::User,
                nfds: 1,
                len: 300
            }))
        );
        assert_eq!(decode_header(&h[..7]), Ok(None));
    }

    #[test]
    fn rejects_bad_headers() {
        let mut h = encode_header(Kind::User, 0, 1);
        h[7] = b'x';
        assert!(matches!(decode_header(&h), Err(FrameError::BadMagic(_))));
        let mut h = encode_header(Kind::User, 0, 1);
        h[4] = 9;
        assert_eq!(decode_header(&h), Err(FrameError::UnknownKind(9)));
        let h = encode_header(Kind::User, 0, MAX_PAYLOAD + 1);
        assert_eq!(
            decode_header(&h),
            Err(FrameError::TooLarge(MAX_PAYLOAD + 1))
        );
        let h = encode_header(Kind::User, 2, 0);
        assert_eq!(decode_header(&h), Err(FrameError::TooManyFds(2)));
        let h = encode_header(Kind::Online, 0, 4);
        assert_eq!(
            decode_header(&h),
            Err(FrameError::UnexpectedPayload(Kind::Online))
        );
        let h = encode_header(Kind::Online, 1, 0);
        assert_eq!(decode_header(&h), Err(FrameError::TooManyFds(1)));
    }

    #[test]
    fn largest_frame_is_accepted() {
        let h = encode_header(Kind::User, 0, MAX_PAYLOAD);
        assert_eq!(
            decode_header(&h).map(|h| h.map(|h| h.len)),
            Ok(Some(MAX_PAYLOAD))
        );
    }

    #[test]
    fn decode_all_stops_at_partial_frame() {
        let mut buf = Vec::new();
        for (i, body) in [&b"ab"[..], b"", b"xyz"].iter().enumerate() {
            let kind = if i == 1 { Kind::Online } else { Kind::User };
            buf.extend_from_slice(&encode_header(kind, 0, body.len()));
            buf.extend_from_slice(body);
        }
        let whole = buf.len();
        buf.extend_from_slice(&encode_header(Kind::User, 0, 5));
        buf.extend_from_slice(b"12");
        let d = decode_all(&buf);
        assert_eq!(d.frames.len(), 3);
        assert_eq!(d.frames[2].1, b"xyz");
        assert_eq!(d.consumed, whole);
        assert_eq!(d.error, None);
    }
}
