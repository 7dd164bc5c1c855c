//! SPDY/3.1 framing, as Go's `moby/spdystream` speaks it: what `kubectl
//! port-forward` (and exec/attach over the legacy protocol) use on an upgraded
//! HTTP connection, or tunnelled as bytes inside WebSocket binary messages.
//!
//! Our own codec rather than a crate: the one SPDY crate in reach, `spdy_mux`,
//! is GPL-licensed (this project is Apache-2.0) and implements only the client
//! side, whereas the agent is the server kubectl talks to.
//!
//! Two kinds of frame share one 8-byte header:
//!
//! ```text
//! control: [1][version:15 = 3][type:16][flags:8][length:24][payload]
//! data:    [0][stream id:31]         [flags:8][length:24][data]
//! ```
//!
//! SYN_STREAM, SYN_REPLY and HEADERS carry a header block: `u32 count`, then
//! `count` × (`u32` name length, name, `u32` value length, value), big-endian,
//! zlib-compressed with the fixed SPDY/3 [`DICTIONARY`]. There is ONE
//! compression context per direction for the whole session and each block ends
//! with a sync flush, so the [`Decoder`] and the [`Encoder`] are stateful: one of
//! each per connection, fed every frame in order. After either returns an error
//! the session cannot go on (the peers' contexts are out of step).
//!
//! Every size is bounded ([`Limits`]): a frame longer than `max_frame_len` is
//! refused as soon as its header is read, and a header block may not inflate
//! past `max_header_block`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;

// Control frame types.
pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

/// FIN on a data frame or on SYN_STREAM/SYN_REPLY/HEADERS: the sender's last frame
/// on that stream.
pub const FLAG_FIN: u8 = 0x01;
/// On SYN_STREAM: the receiver sends nothing back on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

// RST_STREAM status codes (SPDY/3 §2.6.3).
pub const PROTOCOL_ERROR: u32 = 1;
pub const INVALID_STREAM: u32 = 2;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
pub const FLOW_CONTROL_ERROR: u32 = 7;
pub const STREAM_IN_USE: u32 = 8;
pub const STREAM_ALREADY_CLOSED: u32 = 9;

// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// The 8-byte header every frame starts with.
pub const FRAME_HEADER_LEN: usize = 8;
/// What a 24-bit length field can say.
pub const MAX_WIRE_LEN: usize = 0x00FF_FFFF;
/// Default bound on one frame's payload (the 24-bit field's own limit is just
/// under this, so by default only [`Limits`] set lower bite).
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Default bound on one header block, decompressed.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// The Adler-32 checksum of [`DICTIONARY`]: the dictionary id in the zlib header
/// of every SPDY/3 header stream.
pub const DICTIONARY_ADLER32: u32 = 0xE3C6_A7C2;

/// The SPDY/3 header compression dictionary (SPDY/3 draft §2.6.10.1), byte for
/// byte as `headerDictionary` in moby/spdystream's `spdy/dictionary.go` (from
/// Go's `go.net/spdy`): 1,423 bytes, Adler-32 [`DICTIONARY_ADLER32`].
pub const DICTIONARY: [u8; 1423] = [
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68,
    0x65, 0x61, 0x64, 0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70,
    0x75, 0x74, 0x00, 0x00, 0x00, 0x06, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00,
    0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65,
    0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f,
    0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c,
    0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70,
    0x74, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00,
    0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68,
    0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x61, 0x63,
    0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x6f,
    0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10,
    0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67,
    0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x6f,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00, 0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74,
    0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00, 0x00, 0x00, 0x04, 0x66,
    0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08, 0x69,
    0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f,
    0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d,
    0x69, 0x66, 0x2d, 0x6e, 0x6f, 0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d,
    0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65,
    0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65,
    0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00,
    0x0c, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00,
    0x06, 0x70, 0x72, 0x61, 0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79,
    0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
    0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61,
    0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00,
    0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65,
    0x72, 0x00, 0x00, 0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c,
    0x65, 0x72, 0x00, 0x00, 0x00, 0x11, 0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65,
    0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61,
    0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61, 0x67, 0x65, 0x6e, 0x74,
    0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61, 0x00,
    0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77,
    0x77, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x06, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00,
    0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30,
    0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03, 0x75, 0x72,
    0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73,
    0x65, 0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65,
    0x70, 0x2d, 0x61, 0x6c, 0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69,
    0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31, 0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35,
    0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33, 0x30, 0x33, 0x33, 0x30, 0x34, 0x33,
    0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30, 0x35, 0x34, 0x30,
    0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34,
    0x31, 0x37, 0x35, 0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e,
    0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65,
    0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20,
    0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30, 0x31, 0x20, 0x4d, 0x6f,
    0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79, 0x34,
    0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30,
    0x31, 0x20, 0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30,
    0x33, 0x20, 0x46, 0x6f, 0x72, 0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e,
    0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64, 0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65,
    0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x45, 0x72, 0x72, 0x6f,
    0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20,
    0x55, 0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46,
    0x65, 0x62, 0x20, 0x4d, 0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a,
    0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20, 0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20,
    0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65, 0x63, 0x20, 0x30, 0x30, 0x3a, 0x30,
    0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65, 0x2c, 0x20, 0x57,
    0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x65, 0x64, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61,
    0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69, 0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d, 0x6c,
    0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74,
    0x2f, 0x6a, 0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c,
    0x69, 0x63, 0x70, 0x72, 0x69, 0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65,
    0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65, 0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64,
    0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75, 0x74, 0x66, 0x2d, 0x38, 0x63,
    0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35, 0x39, 0x2d,
    0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

/// Why a frame could not be read or written, or a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("SPDY header block exceeds {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    #[error("unsupported SPDY version {0} (want 3)")]
    Version(u16),
    #[error("malformed SPDY frame: {0}")]
    Malformed(String),
    #[error("SPDY header compression failed: {0}")]
    Compression(String),
    #[error("SPDY decoder already failed; the session cannot continue")]
    Poisoned,
    #[error("SPDY transport: {0}")]
    Io(#[from] std::io::Error),
}

impl SpdyError {
    fn malformed(what: impl Into<String>) -> Self {
        SpdyError::Malformed(what.into())
    }
}

/// A header block's entries, in wire order. Names are as sent (SPDY wants them
/// lowercase); a value with several parts keeps its NUL separators.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (compared ASCII case-insensitively).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY/3.1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens stream `stream_id` (odd from the client, even from the server).
    SynStream {
        stream_id: u32,
        assoc: u32,
        /// 0 (highest) to 7.
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    /// Accepts a stream the peer opened; spdystream drops DATA on a stream it
    /// has not seen the reply for.
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    /// Aborts a stream; `status` is one of the RST_STREAM codes.
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Its content is read past and dropped: nothing here depends on it.
    Settings,
    /// Odd ids come from the client, to be echoed back unchanged.
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this codec does not know (its payload was
    /// skipped, as SPDY says to). Cannot be encoded.
    Unknown {
        kind: u16,
    },
}

/// The bounds a [`Decoder`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest frame payload accepted (bytes after the 8-byte header).
    pub max_frame_len: usize,
    /// Largest header block once decompressed.
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: MAX_FRAME_LEN,
            max_header_block: MAX_HEADER_BLOCK,
        }
    }
}

/// Reads frames out of a byte stream: [`push`](Decoder::push) what arrives,
/// then take [`next_frame`](Decoder::next_frame) until it says `None`. Holds the
/// session's inflate context, so one decoder per connection.
pub struct Decoder {
    buf: BytesMut,
    inflate: Decompress,
    limits: Limits,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len())
            .field("limits", &self.limits)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Decoder::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Decoder {
            buf: BytesMut::new(),
            inflate: Decompress::new(true),
            limits,
            failed: false,
        }
    }

    /// Appends bytes read from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` while more bytes are needed. A frame
    /// announced longer than the limit is refused as soon as its header is in,
    /// without waiting for (or buffering) its payload. After an error every call
    /// fails: the session is over.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.failed {
            return Err(SpdyError::Poisoned);
        }
        match self.decode() {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let flags = self.buf[4];
        let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        let control = first & 0x8000_0000 != 0;
        if control {
            // Checked before the length: a peer speaking another version (or
            // another protocol) is told so rather than "frame too large".
            let version = ((first >> 16) & 0x7FFF) as u16;
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
        }
        if len > self.limits.max_frame_len {
            return Err(SpdyError::FrameTooLarge {
                len,
                max: self.limits.max_frame_len,
            });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            // Not reserved up front: a claimed length costs nothing until its
            // bytes arrive.
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        let fin = flags & FLAG_FIN != 0;
        if !control {
            let stream_id = first & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(SpdyError::malformed("data frame on stream 0"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin,
                data: payload,
            }));
        }
        let kind = (first & 0xFFFF) as u16;
        self.control(kind, flags, payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, mut p: Bytes) -> Result<Frame, SpdyError> {
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = stream_id(p.get_u32(), "SYN_STREAM")?;
                let assoc = p.get_u32() & MAX_STREAM_ID;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                let headers = self.header_block(&p)?;
                Frame::SynStream {
                    stream_id,
                    assoc,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let what = if kind == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(&p, 4, what)?;
                let stream_id = stream_id(p.get_u32(), what)?;
                let headers = self.header_block(&p)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                exact(&p, 8, "RST_STREAM")?;
                let stream_id = stream_id(p.get_u32(), "RST_STREAM")?;
                Frame::RstStream {
                    stream_id,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => Frame::Settings,
            TYPE_PING => {
                exact(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                exact(&p, 8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: p.get_u32() & MAX_STREAM_ID,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                exact(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & MAX_STREAM_ID,
                    delta: p.get_u32() & 0x7FFF_FFFF,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(frame)
    }

    /// Inflates one header block through the session's context and parses it.
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let max = self.limits.max_header_block;
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(4).min(max) + 64);
        let mut input = compressed;
        loop {
            if out.len() > max {
                return Err(SpdyError::HeaderBlockTooLarge { max });
            }
            if out.len() == out.capacity() {
                out.reserve((max + 1 - out.len()).clamp(1, 16 * 1024));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - in_before)
                .unwrap_or(usize::MAX)
                .min(input.len());
            input = &input[consumed..];
            let produced = out.len() - out_before;
            match result {
                Ok(Status::StreamEnd) => {
                    // SPDY never ends the zlib stream; a peer that did cannot
                    // send another header block.
                    return Err(SpdyError::Compression(
                        "the peer ended the header compression stream".into(),
                    ));
                }
                Ok(Status::Ok | Status::BufError) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                        return Err(SpdyError::Compression(
                            "header block does not inflate".into(),
                        ));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ADLER32) => {
                        self.inflate
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    }
                    Some(other) => {
                        return Err(SpdyError::Compression(format!(
                            "header block wants dictionary {other:#010x}, not SPDY/3's"
                        )));
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
        }
        if out.len() > max {
            return Err(SpdyError::HeaderBlockTooLarge { max });
        }
        Ok(out)
    }
}

fn need(p: &[u8], n: usize, what: &str) -> Result<(), SpdyError> {
    if p.len() < n {
        return Err(SpdyError::malformed(format!(
            "{what} of {} bytes, shorter than {n}",
            p.len()
        )));
    }
    Ok(())
}

fn exact(p: &[u8], n: usize, what: &str) -> Result<(), SpdyError> {
    if p.len() != n {
        return Err(SpdyError::malformed(format!(
            "{what} of {} bytes, not {n}",
            p.len()
        )));
    }
    Ok(())
}

fn stream_id(word: u32, what: &str) -> Result<u32, SpdyError> {
    let id = word & MAX_STREAM_ID;
    if id == 0 {
        return Err(SpdyError::malformed(format!("{what} on stream 0")));
    }
    Ok(id)
}

/// Parses a decompressed header block. Its size is already bounded, and the count
/// is never used to allocate: a lying count runs out of bytes.
fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut p = raw;
    let count = take_u32(&mut p)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take_string(&mut p)?;
        let value = take_string(&mut p)?;
        headers.push((name, value));
    }
    if !p.is_empty() {
        return Err(SpdyError::malformed(format!(
            "{} bytes after the last header",
            p.len()
        )));
    }
    Ok(headers)
}

fn take_u32(p: &mut &[u8]) -> Result<u32, SpdyError> {
    if p.len() < 4 {
        return Err(SpdyError::malformed("header block truncated"));
    }
    Ok(p.get_u32())
}

fn take_string(p: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_u32(p)? as usize;
    if p.len() < len {
        return Err(SpdyError::malformed("header block truncated"));
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    // Not UTF-8 is the peer's bug, not a reason to end the session: the value
    // then fails whatever check reads it.
    Ok(String::from_utf8_lossy(s).into_owned())
}

/// Writes frames. Holds the session's deflate context, so one encoder per
/// connection, and frames must go on the wire in the order they were encoded.
pub struct Encoder {
    deflate: Compress,
    max_header_block: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// A deflate context primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::best(), true);
        let adler = deflate
            .set_dictionary(&DICTIONARY)
            .map_err(|e| SpdyError::Compression(e.to_string()))?;
        if adler != DICTIONARY_ADLER32 {
            return Err(SpdyError::Compression(format!(
                "dictionary checksum {adler:#010x}, not {DICTIONARY_ADLER32:#010x}"
            )));
        }
        Ok(Encoder {
            deflate,
            max_header_block: MAX_HEADER_BLOCK,
        })
    }

    /// The frame's bytes. Sizes are checked before the compression context is
    /// touched; still, an error from a frame with headers ends the session.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let mut out = BytesMut::new();
        self.encode_into(frame, &mut out)?;
        Ok(out.to_vec())
    }

    /// Appends the frame's bytes to `out` (nothing on error).
    pub fn encode_into(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id,
                assoc,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let id = check_id(*stream_id)?;
                let block = self.compress_headers(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                control_header(out, TYPE_SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(id);
                out.put_u32(assoc & MAX_STREAM_ID);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let id = check_id(*stream_id)?;
                let block = self.compress_headers(headers)?;
                control_header(out, kind, flag(*fin, FLAG_FIN), 4 + block.len())?;
                out.put_u32(id);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                let id = check_id(*stream_id)?;
                control_header(out, TYPE_RST_STREAM, 0, 8)?;
                out.put_u32(id);
                out.put_u32(*status);
            }
            Frame::Settings => {
                control_header(out, TYPE_SETTINGS, 0, 4)?;
                out.put_u32(0);
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway { last_good, status } => {
                control_header(out, TYPE_GOAWAY, 0, 8)?;
                out.put_u32(last_good & MAX_STREAM_ID);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & MAX_STREAM_ID);
                out.put_u32(delta & 0x7FFF_FFFF);
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let id = check_id(*stream_id)?;
                if data.len() > MAX_WIRE_LEN {
                    return Err(SpdyError::FrameTooLarge {
                        len: data.len(),
                        max: MAX_WIRE_LEN,
                    });
                }
                out.reserve(FRAME_HEADER_LEN + data.len());
                out.put_u32(id);
                out.put_u32((u32::from(flag(*fin, FLAG_FIN)) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::Unknown { kind } => {
                return Err(SpdyError::malformed(format!(
                    "cannot encode a control frame of unknown type {kind}"
                )));
            }
        }
        Ok(())
    }

    fn compress_headers(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        let count = u32::try_from(headers.len()).map_err(|_| SpdyError::HeaderBlockTooLarge {
            max: self.max_header_block,
        })?;
        raw.put_u32(count);
        for (name, value) in headers {
            for s in [name, value] {
                if raw.len() + 4 + s.len() > self.max_header_block {
                    return Err(SpdyError::HeaderBlockTooLarge {
                        max: self.max_header_block,
                    });
                }
                raw.put_u32(s.len() as u32);
                raw.put_slice(s.as_bytes());
            }
        }
        self.deflate_block(&raw)
    }

    /// Compresses one block through the session's context, ending in a sync
    /// flush so the peer can inflate it whole.
    fn deflate_block(&mut self, raw: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(input.len() + 256);
            }
            let (in_before, out_before) = (self.deflate.total_in(), out.len());
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = usize::try_from(self.deflate.total_in() - in_before)
                .unwrap_or(usize::MAX)
                .min(input.len());
            input = &input[consumed..];
            // Flushed once the input is in and the output was not filled up.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if consumed == 0 && out.len() == out_before && out.len() < out.capacity() {
                return Err(SpdyError::Compression("deflate made no progress".into()));
            }
        }
        Ok(out)
    }
}

fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

fn check_id(id: u32) -> Result<u32, SpdyError> {
    if id == 0 || id > MAX_STREAM_ID {
        return Err(SpdyError::malformed(format!("stream id {id} out of range")));
    }
    Ok(id)
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    if len > MAX_WIRE_LEN {
        return Err(SpdyError::FrameTooLarge {
            len,
            max: MAX_WIRE_LEN,
        });
    }
    out.reserve(FRAME_HEADER_LEN + len);
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | len as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn decode_all(dec: &mut Decoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame().expect("decodes") {
            frames.push(f);
        }
        frames
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// One of every kind, headers several times so the contexts carry over.
    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                assoc: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::SynStream {
                stream_id: 3,
                assoc: 1,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Headers {
                stream_id: 3,
                fin: true,
                headers: h(&[("x", "a\0b"), ("", "")]),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: CANCEL,
            },
            Frame::Settings,
            Frame::Ping { id: 7 },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 65536,
            },
            Frame::SynReply {
                stream_id: 3,
                fin: true,
                headers: h(&[("status", "200")]),
            },
            Frame::GoAway {
                last_good: 3,
                status: GOAWAY_OK,
            },
        ]
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ADLER32);
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0."));
    }

    #[test]
    fn round_trip_through_one_pair_of_contexts() {
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::new();
        for round in 0..3 {
            for frame in sample_frames() {
                let bytes = enc.encode(&frame).unwrap();
                dec.push(&bytes);
                assert_eq!(dec.next_frame().unwrap(), Some(frame), "round {round}");
                assert_eq!(dec.next_frame().unwrap(), None);
                assert_eq!(dec.buffered(), 0);
            }
        }
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut enc = Encoder::new().unwrap();
        let frames = sample_frames();
        let wire: Vec<u8> = frames.iter().flat_map(|f| enc.encode(f).unwrap()).collect();
        for cut in 0..=wire.len() {
            let mut dec = Decoder::new();
            dec.push(&wire[..cut]);
            let mut got = decode_all(&mut dec);
            dec.push(&wire[cut..]);
            got.extend(decode_all(&mut dec));
            assert_eq!(got, frames, "cut at {cut}");
        }
        // And one byte at a time.
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b));
            got.extend(decode_all(&mut dec));
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn wire_layout() {
        let mut enc = Encoder::new().unwrap();
        assert_eq!(
            enc.encode(&Frame::Ping { id: 0x0102_0304 }).unwrap(),
            [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4]
        );
        assert_eq!(
            enc.encode(&Frame::RstStream {
                stream_id: 3,
                status: PROTOCOL_ERROR
            })
            .unwrap(),
            [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 1]
        );
        assert_eq!(
            enc.encode(&Frame::Data {
                stream_id: 5,
                fin: true,
                data: Bytes::from_static(b"ab"),
            })
            .unwrap(),
            [0, 0, 0, 5, 0x01, 0, 0, 2, b'a', b'b']
        );
        // The first header block opens the zlib stream: header with FDICT and
        // the SPDY/3 dictionary id, as Go's zlib.NewReaderDict expects.
        let syn = enc
            .encode(&Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            })
            .unwrap();
        assert_eq!(&syn[..4], [0x80, 0x03, 0x00, 0x02]);
        assert_eq!(&syn[8..12], [0, 0, 0, 1]);
        assert_eq!(syn[13] & 0x20, 0x20, "FDICT");
        assert_eq!(syn[14..18], DICTIONARY_ADLER32.to_be_bytes());
        assert!(syn.ends_with(&[0, 0, 0xff, 0xff]), "sync flush");
    }

    /// Frames compressed by C zlib (Python's `zlib.compressobj(9, zdict=...)`,
    /// `Z_SYNC_FLUSH` after each block) as client-go sends them: two blocks
    /// through one context.
    #[test]
    fn reads_blocks_compressed_by_c_zlib() {
        let wire = [
            unhex(
                "800300010000003d0000000100000000000078f9e3c6a7c202253a48f95b044eea\
                 16061606409ab308125f99a074cc68004e892545a989b9d0c2863515141500000000ffff",
            ),
            unhex("800300010000001600000003000000000000225333a8a44a04000000ffff"),
        ]
        .concat();
        let mut dec = Decoder::new();
        dec.push(&wire);
        let frames = decode_all(&mut dec);
        let expect = |id, kind| Frame::SynStream {
            stream_id: id,
            assoc: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: h(&[("port", "8080"), ("requestid", "0"), ("streamtype", kind)]),
        };
        assert_eq!(frames, vec![expect(1, "error"), expect(3, "data")]);
    }

    #[test]
    fn header_lookup_ignores_case() {
        let hs = h(&[("Port", "80"), ("port", "81")]);
        assert_eq!(header(&hs, "port"), Some("80"));
        assert_eq!(header(&hs, "requestid"), None);
    }

    #[test]
    fn refuses_a_frame_over_the_limit_from_its_header() {
        let mut dec = Decoder::with_limits(Limits {
            max_frame_len: 100,
            max_header_block: 1000,
        });
        // Data frame announcing 101 bytes; none of them sent.
        dec.push(&[0, 0, 0, 1, 0, 0, 0, 101]);
        assert!(matches!(
            dec.next_frame(),
            Err(SpdyError::FrameTooLarge { len: 101, max: 100 })
        ));
        assert!(matches!(dec.next_frame(), Err(SpdyError::Poisoned)));
        // At the limit it is fine.
        let mut dec = Decoder::with_limits(Limits {
            max_frame_len: 100,
            max_header_block: 1000,
        });
        dec.push(&[0, 0, 0, 1, 0, 0, 0, 100]);
        assert_eq!(dec.next_frame().unwrap(), None);
        dec.push(&[7; 100]);
        assert!(matches!(dec.next_frame(), Ok(Some(Frame::Data { .. }))));
    }

    #[test]
    fn refuses_a_header_block_that_inflates_too_far() {
        let mut enc = Encoder::new().unwrap();
        let big = "x".repeat(200_000);
        let frame = enc
            .encode(&Frame::Headers {
                stream_id: 1,
                fin: false,
                headers: h(&[("a", &big)]),
            })
            .unwrap();
        assert!(frame.len() < 2_000, "compresses well: {}", frame.len());
        let mut dec = Decoder::with_limits(Limits {
            max_frame_len: MAX_FRAME_LEN,
            max_header_block: 100_000,
        });
        dec.push(&frame);
        assert!(matches!(
            dec.next_frame(),
            Err(SpdyError::HeaderBlockTooLarge { max: 100_000 })
        ));
        // The encoder refuses to build one over its own bound, before compressing.
        let huge = "y".repeat(MAX_HEADER_BLOCK);
        assert!(matches!(
            enc.encode(&Frame::Headers {
                stream_id: 1,
                fin: false,
                headers: h(&[("a", &huge)]),
            }),
            Err(SpdyError::HeaderBlockTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("version 2", vec![0x80, 0x02, 0, 1, 0, 0, 0, 0]),
            (
                "short SYN_STREAM",
                vec![0x80, 0x03, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1],
            ),
            ("RST_STREAM too long", {
                let mut v = vec![0x80, 0x03, 0, 3, 0, 0, 0, 9];
                v.extend([0, 0, 0, 1, 0, 0, 0, 1, 0]);
                v
            }),
            ("PING too short", vec![0x80, 0x03, 0, 6, 0, 0, 0, 2, 0, 1]),
            ("data on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 0]),
            ("SYN_REPLY on stream 0", {
                let mut v = vec![0x80, 0x03, 0, 2, 0, 0, 0, 4];
                v.extend([0, 0, 0, 0]);
                v
            }),
            ("header block not zlib", {
                let mut v = vec![0x80, 0x03, 0, 2, 0, 0, 0, 10];
                v.extend([0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]);
                v
            }),
            ("header block with another dictionary", {
                // zlib header with FDICT and dictionary id 1.
                let mut v = vec![0x80, 0x03, 0, 2, 0, 0, 0, 10];
                v.extend([0, 0, 0, 1, 0x78, 0xbb, 0, 0, 0, 1]);
                v
            }),
        ];
        for (what, bytes) in cases {
            let mut dec = Decoder::new();
            dec.push(&bytes);
            assert!(dec.next_frame().is_err(), "{what}");
        }
    }

    #[test]
    fn rejects_a_truncated_or_lying_header_block() {
        // A raw block whose count says more headers than it has, compressed by
        // a proper context so only the parse fails.
        let mut enc = Encoder::new().unwrap();
        let mut raw = Vec::new();
        raw.put_u32(1_000_000);
        raw.put_u32(1);
        raw.put_slice(b"a");
        let block = enc.deflate_block(&raw).unwrap();
        let mut wire = BytesMut::new();
        control_header(&mut wire, TYPE_HEADERS, 0, 4 + block.len()).unwrap();
        wire.put_u32(1);
        wire.put_slice(&block);
        let mut dec = Decoder::new();
        dec.push(&wire);
        assert!(matches!(dec.next_frame(), Err(SpdyError::Malformed(_))));
    }

    #[test]
    fn skips_unknown_control_frames_and_settings_content() {
        let mut dec = Decoder::new();
        dec.push(&[0x80, 0x03, 0x00, 0x42, 0, 0, 0, 3, 1, 2, 3]);
        dec.push(&[
            0x80, 0x03, 0x00, 0x04, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 9,
        ]);
        dec.push(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(
            decode_all(&mut dec),
            vec![
                Frame::Unknown { kind: 0x42 },
                Frame::Settings,
                Frame::Ping { id: 1 }
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A fixed pseudo-random sequence (xorshift), fed in uneven pieces.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200 {
            let mut dec = Decoder::with_limits(Limits {
                max_frame_len: 4096,
                max_header_block: 4096,
            });
            let mut bytes = Vec::new();
            for _ in 0..512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(x as u8);
            }
            // Force control frames of version 3 now and then.
            if x.is_multiple_of(2) {
                bytes[0] = 0x80;
                bytes[1] = 0x03;
                bytes[2] = 0;
                bytes[3] = (x % 10) as u8;
            }
            for chunk in bytes.chunks(37) {
                dec.push(chunk);
                while let Ok(Some(_)) = dec.next_frame() {}
            }
        }
    }

    #[test]
    fn encoder_refuses_what_the_wire_cannot_say() {
        let mut enc = Encoder::new().unwrap();
        assert!(enc.encode(&Frame::Unknown { kind: 5 }).is_err());
        assert!(
            enc.encode(&Frame::Ping { id: 0 }).is_ok(),
            "the codec does not judge ping ids"
        );
        assert!(
            enc.encode(&Frame::Data {
                stream_id: 0,
                fin: false,
                data: Bytes::new()
            })
            .is_err()
        );
        assert!(
            enc.encode(&Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![0; MAX_WIRE_LEN + 1]),
            })
            .is_err()
        );
        assert!(
            enc.encode(&Frame::RstStream {
                stream_id: MAX_STREAM_ID + 1,
                status: 1
            })
            .is_err()
        );
    }
}
