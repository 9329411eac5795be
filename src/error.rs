//! The crate's one error type.

use std::fmt;
use std::io;

use ringleader_sys::OwnedFd;

use crate::ipc::frame::FrameError;

/// What went wrong, broadly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed; [`Error::io_error`] has the errno.
    Io,
    /// The channel is closed: the other side disconnected or died.
    Disconnected,
    /// A message larger than [`MAX_PAYLOAD`](crate::MAX_PAYLOAD) was refused.
    TooLarge,
    /// The peer broke the wire protocol (a malformed or oversized frame, a missing fd).
    Protocol,
    /// No worker with that id is known.
    NoSuchWorker,
    /// The settings are not valid, or cannot change any more.
    Settings,
    /// A message was not valid JSON for the requested type.
    Json,
    /// `role()` was called a second time in a worker.
    RoleTaken,
    /// The load board: a worker's slot holds impossible values (reported once; that worker
    /// gets no more connections), or a worker has no slot to post a hint in.
    Board,
}

/// An error from ringleader: what kind, which operation, and the cause.
///
/// An operation that fails without consuming an fd it was given returns it here
/// ([`Error::take_fd`]).
pub struct Error {
    kind: ErrorKind,
    op: &'static str,
    detail: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    fd: Option<OwnedFd>,
}

/// `Result<T, ringleader::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, op: &'static str) -> Error {
        Error {
            kind,
            op,
            detail: None,
            source: None,
            fd: None,
        }
    }

    fn caused(
        kind: ErrorKind,
        op: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            source: Some(Box::new(source)),
            ..Error::new(kind, op)
        }
    }

    pub(crate) fn io(op: &'static str, e: io::Error) -> Error {
        let kind = match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ErrorKind::Disconnected,
            _ => ErrorKind::Io,
        };
        Error::caused(kind, op, e)
    }

    pub(crate) fn frame(op: &'static str, e: FrameError) -> Error {
        let kind = match e {
            FrameError::TooLarge(_) => ErrorKind::TooLarge,
            _ => ErrorKind::Protocol,
        };
        Error::caused(kind, op, e)
    }

    pub(crate) fn json(op: &'static str, e: serde_json::Error) -> Error {
        Error::caused(ErrorKind::Json, op, e)
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn with_fd(mut self, fd: Option<OwnedFd>) -> Error {
        self.fd = fd;
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed, e.g. `"fork a worker"`.
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// The underlying `io::Error`, when a system call failed.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>())
    }

    /// The errno, when a system call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// The fd the failed operation was given, handed back.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// This error and its causes on one line, `what failed: why: why that`, for a person
    /// to read. `Display` shows this error alone, and `source()` gives the cause, as error
    /// reporters that walk the chain expect.
    ///
    /// # Examples
    /// ```
    /// fn log(e: &ringleader::Error) {
    ///     // listen: system call failed: Address already in use (os error 98)
    ///     eprintln!("{}", e.report());
    /// }
    /// ```
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// [`Error::report`]: the error and its causes, separated by `: `.
#[derive(Debug)]
pub struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.op)?;
        match self.kind {
            ErrorKind::Io => f.write_str("system call failed")?,
            ErrorKind::Disconnected => f.write_str("channel closed")?,
            ErrorKind::TooLarge => f.write_str("message too large")?,
            ErrorKind::Protocol => f.write_str("protocol violation")?,
            ErrorKind::NoSuchWorker => f.write_str("no such worker")?,
            ErrorKind::Settings => f.write_str("invalid settings")?,
            ErrorKind::Json => f.write_str("JSON")?,
            ErrorKind::RoleTaken => f.write_str("role() was already called in this worker")?,
            ErrorKind::Board => f.write_str("load board")?,
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        // The cause is `source()`'s to tell: a report that walks the chain shows it once.
        Ok(())
    }
}

/// `{:?}` is the one-line [`Error::report`], so that `fn main() -> Result<(), Error>` prints
/// what a person can act on; `{:#?}` shows the fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(&self.report(), f);
        }
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("op", &self.op)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .field("fd", &self.fd)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| &**s as _)
    }
}

impl From<io::Error> for Error {
    /// For `?` on I/O in code that returns ringleader's `Result` (the operation is `"I/O"`).
    fn from(e: io::Error) -> Error {
        Error::io("I/O", e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        if let Some(code) = e.raw_os_error() {
            return io::Error::from_raw_os_error(code);
        }
        let kind = match e.kind {
            ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
            ErrorKind::TooLarge | ErrorKind::Settings => io::ErrorKind::InvalidInput,
            ErrorKind::Protocol | ErrorKind::Json => io::ErrorKind::InvalidData,
            ErrorKind::NoSuchWorker => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
