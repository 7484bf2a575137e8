//! The frames ranks exchange about requests, and their byte encoding.
//! Pure: `encode` and `decode` on byte buffers, whatever carries them (an
//! MPI message, or a channel in one process).
//!
//! Every stream starts with `Open`, which names its `Service` (a proxied
//! request, a store operation, a worker's figures); the other frames are
//! the same for every service. A request travels as `Open`, then `Data`
//! chunks of at most `MAX_CHUNK` bytes, then `End`; the answer as `Head`,
//! `Data`..., `End`. `Credit` lets the receiver of a stream grant the
//! sender more bytes, so a slow client slows its upstream instead of
//! filling memory. `Abort` ends a stream from either side.
//!
//! Layout: kind (1 byte), stream id (8 bytes, little-endian), then the
//! kind's fields; numbers little-endian, byte strings as a u32 length and
//! the bytes. Anything left over or missing is an error.

use std::fmt;

/// Largest body chunk in one `Data` frame.
pub const MAX_CHUNK: usize = 1 << 20;
/// Longest byte string in a head (a name, a value, a target).
const MAX_STRING: usize = 64 * 1024;
/// Most fields in one head.
const MAX_FIELDS: usize = 1024;

/// Why a stream was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The downstream client went away.
    ClientGone,
    /// The upstream could not be reached (502).
    Unreachable,
    /// The upstream did not answer in time (504).
    Timeout,
    /// The upstream sent something that is not HTTP (502).
    BadUpstream,
    /// The worker is shutting down or could not take the request.
    Refused,
    /// Connecting to the upstream timed out (504; nothing was sent, so
    /// another upstream may be tried).
    ConnectTimeout,
    /// A store replica's disk is full (507): nothing of the write was kept.
    NoSpace,
    /// The worker running the stream was taken for dead (502). Rank 0
    /// says so itself; no upstream is to blame.
    WorkerLost,
}

impl AbortReason {
    fn code(self) -> u8 {
        match self {
            AbortReason::ClientGone => 1,
            AbortReason::Unreachable => 2,
            AbortReason::Timeout => 3,
            AbortReason::BadUpstream => 4,
            AbortReason::Refused => 5,
            AbortReason::ConnectTimeout => 6,
            AbortReason::NoSpace => 7,
            AbortReason::WorkerLost => 8,
        }
    }

    fn from_code(c: u8) -> Option<AbortReason> {
        Some(match c {
            1 => AbortReason::ClientGone,
            2 => AbortReason::Unreachable,
            3 => AbortReason::Timeout,
            4 => AbortReason::BadUpstream,
            5 => AbortReason::Refused,
            6 => AbortReason::ConnectTimeout,
            7 => AbortReason::NoSpace,
            8 => AbortReason::WorkerLost,
            _ => return None,
        })
    }
}

/// Header fields as they travel: names and values as bytes.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One frame about stream `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream, for `service`.
    Open {
        id: u64,
        service: Service,
    },
    /// The upstream's answer head; `length` when it declared one.
    Head {
        id: u64,
        status: u16,
        fields: Fields,
        length: Option<u64>,
    },
    Data {
        id: u64,
        bytes: Vec<u8>,
    },
    End {
        id: u64,
    },
    Abort {
        id: u64,
        reason: AbortReason,
    },
    /// The receiver may take `bytes` more of this stream's body. A
    /// worker's first `Credit` for a stream also says it took the request.
    Credit {
        id: u64,
        bytes: u32,
    },
    /// Rank 0 asks a worker whether it is alive; `id` is a sequence number.
    Ping {
        id: u64,
    },
    /// The worker's answer to `Ping { id }`.
    Pong {
        id: u64,
    },
    /// A worker's figures (`metrics::Snapshot`), the one answer to an
    /// `Open` for `Service::Stats`.
    Stats {
        id: u64,
        body: Vec<u8>,
    },
}

/// What a stream is opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// An HTTP request to send on to an upstream (boxed: the largest
    /// service by far, it would make every frame as large).
    Proxy(Box<ProxyRequest>),
    /// A document store operation on the replica of one rank: `Put` is
    /// followed by the body's `Data` frames and `End`; every answer is a
    /// `Head` (its status says what happened), `Data` frames for a read or
    /// a list, and `End`.
    Store {
        op: StoreOp,
        path: Vec<u8>,
        meta: DocMeta,
    },
    /// Rank 0 asks a worker for its figures: one `Stats` frame answers.
    Stats,
}

/// A request for `upstream` (`host:port`): method, target, fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    pub upstream: Vec<u8>,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub fields: Fields,
    /// A body follows (`Data` frames, then `End`).
    pub has_body: bool,
    /// Its length, when the client declared one (else it is re-framed as
    /// chunked upstream).
    pub length: Option<u64>,
}

impl Service {
    fn code(&self) -> u8 {
        match self {
            Service::Proxy(_) => 1,
            Service::Store { .. } => 2,
            Service::Stats => 3,
        }
    }
}

/// What a `Store` frame asks of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Keep this version of the document, unless a newer one is there.
    Put,
    /// Send `meta.version` of the document (404 if another is there).
    Read,
    /// Send every document's path and metadata (`encode_inventory`).
    List,
    /// Remove the copy if it is `meta.version`.
    Drop,
}

/// What a replica answers a `Store` frame with: the status of its `Head`,
/// named. Each operation has its own, and every `match` on them is
/// exhaustive, so a new answer must be decided on everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    /// Put: the body is durable in a temporary file; a second `End`
    /// commits it, an `Abort` drops it.
    Prepared,
    /// Put, committed: this version is now the one on disk.
    Written,
    /// Put, committed: the replica had this version or a newer one.
    Stale,
    /// Read, List, Drop: here it is (or it was removed).
    Found,
    /// Read, Drop: the replica has another version, or none.
    Missing,
}

impl StoreReply {
    /// The `Head` status that carries it (HTTP-like, for logs and metrics).
    pub fn status(self) -> u16 {
        match self {
            StoreReply::Prepared => 202,
            StoreReply::Written => 201,
            StoreReply::Stale | StoreReply::Found => 200,
            StoreReply::Missing => 404,
        }
    }

    /// The answer a `Head` status gives to `op`; `None` for one the
    /// operation cannot have.
    pub fn of(op: StoreOp, status: u16) -> Option<StoreReply> {
        Some(match (op, status) {
            (StoreOp::Put, 202) => StoreReply::Prepared,
            (StoreOp::Put, 201) => StoreReply::Written,
            (StoreOp::Put, 200) => StoreReply::Stale,
            (StoreOp::Read | StoreOp::List | StoreOp::Drop, 200) => StoreReply::Found,
            (StoreOp::Read | StoreOp::Drop, 404) => StoreReply::Missing,
            _ => return None,
        })
    }
}

impl StoreOp {
    fn code(self) -> u8 {
        match self {
            StoreOp::Put => 1,
            StoreOp::Read => 2,
            StoreOp::List => 3,
            StoreOp::Drop => 4,
        }
    }

    fn from_code(c: u8) -> Option<StoreOp> {
        Some(match c {
            1 => StoreOp::Put,
            2 => StoreOp::Read,
            3 => StoreOp::List,
            4 => StoreOp::Drop,
            _ => return None,
        })
    }
}

/// One version of a stored document, as every replica and rank 0 know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocMeta {
    /// Rank 0 numbers every write; a larger version is a later write.
    pub version: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub content_type: String,
    /// Body bytes.
    pub length: u64,
    /// A tombstone: the document was deleted by this version.
    pub deleted: bool,
}

/// A buffer that is not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame: {}", self.0)
    }
}

impl std::error::Error for WireError {}

const OPEN: u8 = 1;
const HEAD: u8 = 2;
const DATA: u8 = 3;
const END: u8 = 4;
const ABORT: u8 = 5;
const CREDIT: u8 = 6;
const PING: u8 = 7;
const PONG: u8 = 8;
const STATS: u8 = 10;

impl Frame {
    /// Whether this opens a stream whose body follows (a proxied request
    /// with a body, a store write): its runner's credit grants go to the
    /// sender (a proxied request's first one opens the window; a store
    /// write opens with one, and its grants come as the replica writes).
    pub fn opens_body(&self) -> bool {
        match self {
            Frame::Open {
                service: Service::Proxy(req),
                ..
            } => req.has_body,
            Frame::Open {
                service: Service::Store { op, .. },
                ..
            } => *op == StoreOp::Put,
            Frame::Open {
                service: Service::Stats,
                ..
            }
            | Frame::Head { .. }
            | Frame::Data { .. }
            | Frame::End { .. }
            | Frame::Credit { .. }
            | Frame::Abort { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Stats { .. } => false,
        }
    }

    /// Whether this opens a proxied request that may reach its upstream
    /// twice: an idempotent method (RFC 9110 §9.2.2) and no body, so the
    /// `Open` alone can be sent again.
    pub fn may_run_twice(&self) -> bool {
        matches!(
            self,
            Frame::Open { service: Service::Proxy(req), .. }
                if !req.has_body
                    && matches!(
                        req.method.as_slice(),
                        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
                    )
        )
    }

    pub fn id(&self) -> u64 {
        match self {
            Frame::Open { id, .. }
            | Frame::Head { id, .. }
            | Frame::Data { id, .. }
            | Frame::End { id }
            | Frame::Abort { id, .. }
            | Frame::Credit { id, .. }
            | Frame::Ping { id }
            | Frame::Pong { id }
            | Frame::Stats { id, .. } => *id,
        }
    }
}

/// The bytes of `frame`.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(match frame {
        Frame::Data { bytes, .. } => bytes.len() + 13,
        _ => 64,
    });
    encode_into(frame, &mut out);
    out
}

/// Append `frame` to a batch: its length as a u32, then its bytes. One MPI
/// message carries every frame for one rank that was ready at once.
pub fn push_batch(batch: &mut Vec<u8>, frame: &Frame) {
    let at = batch.len();
    batch.extend_from_slice(&[0; 4]);
    encode_into(frame, batch);
    // A frame is at most MAX_CHUNK plus a head's strings: well within u32.
    let len = (batch.len() - at - 4) as u32;
    batch[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The frames of a batch made by `push_batch`.
pub fn decode_batch(mut buf: &[u8]) -> Result<Vec<Frame>, WireError> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        let mut r = Reader { buf };
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        frames.push(decode(body)?);
        buf = r.buf;
    }
    Ok(frames)
}

fn encode_into(frame: &Frame, out: &mut Vec<u8>) {
    let kind = match frame {
        Frame::Open { .. } => OPEN,
        Frame::Head { .. } => HEAD,
        Frame::Data { .. } => DATA,
        Frame::End { .. } => END,
        Frame::Abort { .. } => ABORT,
        Frame::Credit { .. } => CREDIT,
        Frame::Ping { .. } => PING,
        Frame::Pong { .. } => PONG,
        Frame::Stats { .. } => STATS,
    };
    out.push(kind);
    out.extend_from_slice(&frame.id().to_le_bytes());
    match frame {
        Frame::Open { service, .. } => {
            out.push(service.code());
            match service {
                Service::Proxy(req) => {
                    put_bytes(out, &req.upstream);
                    put_bytes(out, &req.method);
                    put_bytes(out, &req.target);
                    put_fields(out, &req.fields);
                    out.push(u8::from(req.has_body));
                    put_length(out, req.length);
                }
                Service::Store { op, path, meta } => {
                    out.push(op.code());
                    put_bytes(out, path);
                    put_meta(out, meta);
                }
                Service::Stats => {}
            }
        }
        Frame::Head {
            status,
            fields,
            length,
            ..
        } => {
            out.extend_from_slice(&status.to_le_bytes());
            put_fields(out, fields);
            put_length(out, *length);
        }
        Frame::Data { bytes, .. } => put_bytes(out, bytes),
        Frame::End { .. } | Frame::Ping { .. } | Frame::Pong { .. } => {}
        Frame::Abort { reason, .. } => out.push(reason.code()),
        Frame::Credit { bytes, .. } => out.extend_from_slice(&bytes.to_le_bytes()),
        Frame::Stats { body, .. } => put_bytes(out, body),
    }
}

fn put_meta(out: &mut Vec<u8>, meta: &DocMeta) {
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.time_ms.to_le_bytes());
    put_bytes(out, meta.content_type.as_bytes());
    out.extend_from_slice(&meta.length.to_le_bytes());
    out.push(u8::from(meta.deleted));
}

/// A replica's list of documents: each path and its metadata.
pub type Inventory = Vec<(Vec<u8>, DocMeta)>;

/// The bytes of (part of) an inventory, for `Data` frames.
pub fn encode_inventory(entries: &[(Vec<u8>, DocMeta)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, meta) in entries {
        put_bytes(&mut out, path);
        put_meta(&mut out, meta);
    }
    out
}

/// The entries in `buf`, made by `encode_inventory`.
pub fn decode_inventory(buf: &[u8]) -> Result<Inventory, WireError> {
    let mut r = Reader { buf };
    let mut entries = Vec::new();
    while !r.buf.is_empty() {
        entries.push((r.bytes(MAX_STRING)?, r.meta()?));
    }
    Ok(entries)
}

fn put_length(out: &mut Vec<u8>, length: Option<u64>) {
    match length {
        Some(n) => {
            out.push(1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// The frame in `buf`, which must hold exactly one.
pub fn decode(buf: &[u8]) -> Result<Frame, WireError> {
    let mut r = Reader { buf };
    let kind = r.u8()?;
    let id = r.u64()?;
    let frame = match kind {
        OPEN => Frame::Open {
            id,
            service: match r.u8()? {
                1 => Service::Proxy(Box::new(ProxyRequest {
                    upstream: r.bytes(MAX_STRING)?,
                    method: r.bytes(MAX_STRING)?,
                    target: r.bytes(MAX_STRING)?,
                    fields: r.fields()?,
                    has_body: r.flag()?,
                    length: r.length()?,
                })),
                2 => Service::Store {
                    op: StoreOp::from_code(r.u8()?).ok_or(WireError("unknown store operation"))?,
                    path: r.bytes(MAX_STRING)?,
                    meta: r.meta()?,
                },
                3 => Service::Stats,
                _ => return Err(WireError("unknown service")),
            },
        },
        HEAD => Frame::Head {
            id,
            status: u16::from_le_bytes(r.array()?),
            fields: r.fields()?,
            length: r.length()?,
        },
        DATA => Frame::Data {
            id,
            bytes: r.bytes(MAX_CHUNK)?,
        },
        END => Frame::End { id },
        ABORT => Frame::Abort {
            id,
            reason: AbortReason::from_code(r.u8()?).ok_or(WireError("unknown abort reason"))?,
        },
        CREDIT => Frame::Credit {
            id,
            bytes: u32::from_le_bytes(r.array()?),
        },
        PING => Frame::Ping { id },
        PONG => Frame::Pong { id },
        STATS => Frame::Stats {
            id,
            body: r.bytes(MAX_CHUNK)?,
        },
        _ => return Err(WireError("unknown kind")),
    };
    if !r.buf.is_empty() {
        return Err(WireError("bytes after the frame"));
    }
    Ok(frame)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by MAX_CHUNK and MAX_STRING, far below u32::MAX.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_fields(out: &mut Vec<u8>, fields: &Fields) {
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for (name, value) in fields {
        put_bytes(out, name);
        put_bytes(out, value);
    }
}

/// A cursor over a frame's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("flag not 0 or 1")),
        }
    }

    fn length(&mut self) -> Result<Option<u64>, WireError> {
        Ok(match self.flag()? {
            true => Some(self.u64()?),
            false => None,
        })
    }

    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(WireError("string too long"));
        }
        Ok(self.take(len)?.to_vec())
    }

    fn meta(&mut self) -> Result<DocMeta, WireError> {
        Ok(DocMeta {
            version: self.u64()?,
            time_ms: self.u64()?,
            content_type: String::from_utf8(self.bytes(MAX_STRING)?)
                .map_err(|_| WireError("content type not UTF-8"))?,
            length: self.u64()?,
            deleted: self.flag()?,
        })
    }

    fn fields(&mut self) -> Result<Fields, WireError> {
        let count = self.u32()? as usize;
        if count > MAX_FIELDS {
            return Err(WireError("too many fields"));
        }
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            fields.push((self.bytes(MAX_STRING)?, self.bytes(MAX_STRING)?));
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        let fields: Fields = vec![
            (b"Host".to_vec(), b"a.example".to_vec()),
            (b"X-Empty".to_vec(), Vec::new()),
        ];
        vec![
            Frame::Open {
                id: 7,
                service: Service::Proxy(Box::new(ProxyRequest {
                    upstream: b"127.0.0.1:5000".to_vec(),
                    method: b"POST".to_vec(),
                    target: b"/api?x=1".to_vec(),
                    fields: fields.clone(),
                    has_body: true,
                    length: Some(12),
                })),
            },
            Frame::Open {
                id: u64::MAX,
                service: Service::Proxy(Box::new(ProxyRequest {
                    upstream: Vec::new(),
                    method: b"GET".to_vec(),
                    target: b"/".to_vec(),
                    fields: Vec::new(),
                    has_body: false,
                    length: None,
                })),
            },
            Frame::Head {
                id: 7,
                status: 200,
                fields,
                length: Some(5 << 30),
            },
            Frame::Head {
                id: 8,
                status: 304,
                fields: Vec::new(),
                length: None,
            },
            Frame::Data {
                id: 7,
                bytes: (0..=255u8).collect(),
            },
            Frame::Data {
                id: 9,
                bytes: vec![0xaa; MAX_CHUNK],
            },
            Frame::Data {
                id: 9,
                bytes: Vec::new(),
            },
            Frame::End { id: 7 },
            Frame::Abort {
                id: 7,
                reason: AbortReason::Timeout,
            },
            Frame::Credit {
                id: 7,
                bytes: 1 << 20,
            },
            Frame::Ping { id: 3 },
            Frame::Pong { id: 3 },
            Frame::Open {
                id: 4,
                service: Service::Store {
                    op: StoreOp::Put,
                    path: b"/store/a b".to_vec(),
                    meta: meta(),
                },
            },
            Frame::Open {
                id: 5,
                service: Service::Store {
                    op: StoreOp::Drop,
                    path: Vec::new(),
                    meta: DocMeta::default(),
                },
            },
            Frame::Open {
                id: 6,
                service: Service::Stats,
            },
            Frame::Stats {
                id: 6,
                body: b"rank 1\n".to_vec(),
            },
        ]
    }

    fn meta() -> DocMeta {
        DocMeta {
            version: 0x1234_5678_9abc,
            time_ms: 1_795_000_000_000,
            content_type: "text/plain; charset=utf-8".into(),
            length: 5 << 30,
            deleted: true,
        }
    }

    #[test]
    fn store_ops_keep_their_codes_and_inventories_round_trip() {
        for code in 1..=4 {
            assert_eq!(StoreOp::from_code(code).unwrap().code(), code);
        }
        assert_eq!(StoreOp::from_code(5), None);
        let entries = vec![
            (b"/store/a".to_vec(), meta()),
            (b"/x".to_vec(), DocMeta::default()),
        ];
        let bytes = encode_inventory(&entries);
        assert_eq!(decode_inventory(&bytes), Ok(entries));
        assert_eq!(decode_inventory(&[]), Ok(Vec::new()));
        for cut in 1..bytes.len() {
            let r = decode_inventory(&bytes[..cut]);
            // A cut between two entries is a shorter inventory, never garbage.
            assert!(r.is_err() || r.unwrap().len() == 1, "cut at {cut}");
        }
    }

    #[test]
    fn store_replies_read_back_from_their_status_for_their_operation() {
        let all = [
            (StoreOp::Put, StoreReply::Prepared),
            (StoreOp::Put, StoreReply::Written),
            (StoreOp::Put, StoreReply::Stale),
            (StoreOp::Read, StoreReply::Found),
            (StoreOp::Read, StoreReply::Missing),
            (StoreOp::List, StoreReply::Found),
            (StoreOp::Drop, StoreReply::Found),
            (StoreOp::Drop, StoreReply::Missing),
        ];
        for (op, reply) in all {
            assert_eq!(StoreReply::of(op, reply.status()), Some(reply), "{op:?}");
        }
        assert_eq!(StoreReply::of(StoreOp::List, 404), None);
        assert_eq!(StoreReply::of(StoreOp::Put, 404), None);
        assert_eq!(StoreReply::of(StoreOp::Read, 500), None);
    }

    #[test]
    fn abort_reasons_keep_their_codes() {
        for code in 1..=8 {
            let reason = AbortReason::from_code(code).unwrap();
            assert_eq!(reason.code(), code, "{reason:?}");
        }
        assert_eq!(AbortReason::from_code(9), None);
    }

    #[test]
    fn batches_round_trip_and_refuse_truncation() {
        let frames = samples();
        let mut batch = Vec::new();
        for f in &frames {
            push_batch(&mut batch, f);
        }
        assert_eq!(decode_batch(&batch), Ok(frames));
        assert_eq!(decode_batch(&[]), Ok(Vec::new()));
        for cut in [1, 3, 4, 20, batch.len() - 1] {
            assert!(decode_batch(&batch[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            assert_eq!(decode(&encode(&frame)), Ok(frame.clone()), "{frame:?}");
        }
    }

    #[test]
    fn every_proper_prefix_is_an_error() {
        for frame in samples()
            .into_iter()
            .filter(|f| !matches!(f, Frame::Data { bytes, .. } if bytes.len() > 300))
        {
            let bytes = encode(&frame);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{frame:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn malformed_buffers_table() {
        let end = encode(&Frame::End { id: 1 });
        let mut trailing = end.clone();
        trailing.push(0);
        let mut unknown_kind = end.clone();
        unknown_kind[0] = 99;
        let mut abort = encode(&Frame::Abort {
            id: 1,
            reason: AbortReason::Refused,
        });
        *abort.last_mut().unwrap() = 42;
        let mut big = vec![DATA];
        big.extend_from_slice(&1u64.to_le_bytes());
        big.extend_from_slice(&((MAX_CHUNK + 1) as u32).to_le_bytes());
        let mut flag = encode(&Frame::Head {
            id: 1,
            status: 200,
            fields: Vec::new(),
            length: None,
        });
        *flag.last_mut().unwrap() = 2;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("trailing byte", trailing),
            ("unknown kind", unknown_kind),
            ("unknown abort reason", abort),
            ("chunk over the limit", big),
            ("flag of 2", flag),
        ];
        for (what, buf) in cases {
            assert!(decode(&buf).is_err(), "{what}");
        }
    }
}
