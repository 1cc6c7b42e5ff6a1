//! Podman's multiplexed log framing, decoded.
//!
//! Without a TTY, `GET /libpod/containers/{id}/logs` sends frames of an 8-byte header — the
//! stream byte (1 = stdout, 2 = stderr), three zero bytes, the payload length as a big-endian
//! `u32` — followed by the payload. HTTP chunks do not respect frame boundaries, so
//! [`FrameDecoder`] buffers until a whole frame is there.

use bytes::{Buf, Bytes, BytesMut};

/// Size of a frame header.
const HEADER: usize = 8;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1 = stdout, 2 = stderr (0 = stdin, never sent for logs).
    pub stream: u8,
    pub data: Bytes,
}

/// Incremental decoder: [`push`](Self::push) bytes as they come, take whole frames out with
/// [`next_frame`](Self::next_frame).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes not yet consumed as whole frames.
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.buf.len() < HEADER {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < HEADER + len {
            return None;
        }
        let stream = self.buf[0];
        self.buf.advance(HEADER);
        let data = self.buf.split_to(len).freeze();
        Some(Frame { stream, data })
    }

    /// Bytes of an incomplete frame still buffered (non-zero at the end of a stream means it
    /// was cut).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes one frame (the inverse of the decoder; used by tests).
pub fn encode_frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len()).expect("frame under 4 GiB");
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> (Vec<Frame>, usize) {
        let mut d = FrameDecoder::new();
        let mut frames = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame() {
                frames.push(f);
            }
        }
        (frames, d.pending())
    }

    #[test]
    fn decodes_what_podman_sent() {
        // Captured from Podman 4.3: "hi\n" on stdout, "err\n" on stderr.
        let wire = b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n\x02\x00\x00\x00\x00\x00\x00\x04err\n";
        let (frames, pending) = decode_all(&[wire]);
        assert_eq!(pending, 0);
        assert_eq!(
            frames,
            vec![
                Frame {
                    stream: 1,
                    data: Bytes::from_static(b"hi\n")
                },
                Frame {
                    stream: 2,
                    data: Bytes::from_static(b"err\n")
                },
            ]
        );
    }

    #[test]
    fn waits_for_a_split_header_and_payload() {
        let wire = encode_frame(1, b"hello");
        let (frames, pending) = decode_all(&[&wire[..3], &wire[3..9], &wire[9..]]);
        assert_eq!(pending, 0);
        assert_eq!(
            frames,
            vec![Frame {
                stream: 1,
                data: Bytes::from_static(b"hello")
            }]
        );
        let (frames, pending) = decode_all(&[&wire[..10]]);
        assert!(frames.is_empty());
        assert_eq!(pending, 10);
    }

    proptest! {
        /// Any chunking of a framed byte stream yields the same frames.
        #[test]
        fn any_chunking_yields_the_same_frames(
            frames in prop::collection::vec((1u8..=2, prop::collection::vec(any::<u8>(), 0..64)), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(|(s, d)| encode_frame(*s, d)).collect();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            points.dedup();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            let (decoded, pending) = decode_all(&chunks);
            prop_assert_eq!(pending, 0);
            let expected: Vec<Frame> =
                frames.iter().map(|(s, d)| Frame { stream: *s, data: Bytes::from(d.clone()) }).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
