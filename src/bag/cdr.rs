//! A bounds-checked reader of the CDR payloads replay consumes, producing r2r's message
//! types (`sensor_msgs/JointState`, `Image`, `CompressedImage`, `std_msgs/Header`).
//!
//! Why not only `from_serialized_bytes`: r2r deserializes through the rmw
//! (`rmw_deserialize`), which per call resolves the typesupport, builds a type-support
//! object, creates, converts and destroys a C message. That costs 1-3 us for a 6-joint
//! `JointState` and ~0.4 ns per pixel byte (`cargo bench --bench decode`), more than replay's
//! whole budget per message next to a small policy's inference. This reader does the same
//! work in place: plain CDR (XCDR1, the encapsulation rosbag2 records: `00 01` little-endian
//! or `00 00` big-endian, options `00 0p` with `p` trailing padding bytes), alignment
//! relative to the body, as the rmw serializes it.
//!
//! It accepts only well-formed payloads and answers `None` for anything else (another
//! encapsulation, truncation, a length beyond the buffer, a string without its single
//! terminating NUL or not UTF-8). Callers ([`super::decode`]) then decode with r2r, so the
//! rmw stays the authority on every payload this reader does not take whole: the result is
//! r2r's for every input, a differential test checks it on random messages, on every prefix
//! and under byte corruption.

use r2r::builtin_interfaces::msg::Time;
use r2r::sensor_msgs::msg::{CompressedImage, Image, JointState};
use r2r::std_msgs::msg::Header;

/// A cursor over a CDR body.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    /// After the 4-byte encapsulation header; `None` unless plain CDR. The two low bits of
    /// the options say how many bytes at the end are padding, not message (as the rmw
    /// reads them); other option bits are left to the rmw.
    fn new(cdr: &'a [u8]) -> Option<Self> {
        let (little, padding) = match cdr.get(..4)? {
            [0, 1, 0, o] if o & !3 == 0 => (true, usize::from(*o)),
            [0, 0, 0, o] if o & !3 == 0 => (false, usize::from(*o)),
            _ => return None,
        };
        Some(Reader {
            body: cdr.get(4..cdr.len().checked_sub(padding)?)?,
            pos: 0,
            little,
        })
    }

    fn align(&mut self, n: usize) -> Option<()> {
        let pad = (n - self.pos % n) % n;
        self.take(pad).map(|_| ())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.body.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.align(N)?;
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.array::<4>()?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn i32(&mut self) -> Option<i32> {
        self.u32().map(|v| v as i32)
    }

    fn f64(&mut self) -> Option<f64> {
        let b = self.array::<8>()?;
        Some(if self.little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        })
    }

    /// A sequence length, bounded by the bytes left for `elem_size`-byte elements (checked
    /// before anything is allocated).
    fn len(&mut self, elem_size: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(elem_size)? <= self.body.len() - self.pos).then_some(n)
    }

    /// A string: its length including the NUL, the bytes, the NUL. Exactly one NUL, at the
    /// end, and UTF-8; anything else is left to the rmw.
    fn string(&mut self) -> Option<String> {
        let n = self.len(1)?;
        let (last, text) = self.take(n)?.split_last()?;
        if *last != 0 || text.contains(&0) {
            return None;
        }
        std::str::from_utf8(text).ok().map(str::to_owned)
    }

    fn f64_seq(&mut self) -> Option<Vec<f64>> {
        let n = self.len(8)?;
        if n > 0 {
            self.align(8)?;
        }
        (0..n).map(|_| self.f64()).collect()
    }

    fn string_seq(&mut self) -> Option<Vec<String>> {
        // Each string takes at least 5 bytes (length and NUL).
        let n = self.len(5)?;
        (0..n).map(|_| self.string()).collect()
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.len(1)?;
        self.take(n).map(<[u8]>::to_vec)
    }

    fn header(&mut self) -> Option<Header> {
        let sec = self.i32()?;
        let nanosec = self.u32()?;
        Some(Header {
            stamp: Time { sec, nanosec },
            frame_id: self.string()?,
        })
    }
}

/// `header.stamp` of a message that begins with a `std_msgs/Header` (`sec`, `nanosec`),
/// reading nothing past the header; `None` where the rmw must decide.
pub fn header_stamp(cdr: &[u8]) -> Option<(i32, u32)> {
    let mut r = Reader::new(cdr)?;
    let sec = r.i32()?;
    let nanosec = r.u32()?;
    // The frame_id must be whole for the header to be.
    let n = r.len(1)?;
    let (last, _) = r.take(n)?.split_last()?;
    (*last == 0).then_some((sec, nanosec))
}

/// A `sensor_msgs/JointState`, or `None` where the rmw must decide.
pub fn joint_state(cdr: &[u8]) -> Option<JointState> {
    let mut r = Reader::new(cdr)?;
    Some(JointState {
        header: r.header()?,
        name: r.string_seq()?,
        position: r.f64_seq()?,
        velocity: r.f64_seq()?,
        effort: r.f64_seq()?,
    })
}

/// A `sensor_msgs/Image`, or `None` where the rmw must decide.
pub fn image(cdr: &[u8]) -> Option<Image> {
    let mut r = Reader::new(cdr)?;
    Some(Image {
        header: r.header()?,
        height: r.u32()?,
        width: r.u32()?,
        encoding: r.string()?,
        is_bigendian: r.u8()?,
        step: r.u32()?,
        data: r.bytes()?,
    })
}

/// A `sensor_msgs/CompressedImage`, or `None` where the rmw must decide.
pub fn compressed_image(cdr: &[u8]) -> Option<CompressedImage> {
    let mut r = Reader::new(cdr)?;
    Some(CompressedImage {
        header: r.header()?,
        format: r.string()?,
        data: r.bytes()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2r::WrappedTypesupport;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
        fn text(&mut self) -> String {
            let pieces = ["", "a", "joint_", "ü", "日本", "x/y", "7"];
            (0..self.below(5))
                .map(|_| pieces[self.below(pieces.len() as u64)])
                .collect()
        }
    }

    fn header(rng: &mut Rng) -> Header {
        Header {
            stamp: Time {
                sec: rng.next() as i32,
                nanosec: rng.next() as u32,
            },
            frame_id: rng.text(),
        }
    }

    /// Checks the reader against r2r (the rmw) on `bytes`, every prefix of it, every value
    /// of each encapsulation byte and `corruptions` randomly damaged copies: wherever the reader answers, r2r decodes the
    /// same message. Returns how many payloads the reader took.
    fn differential<T, F>(bytes: &[u8], read: F, rng: &mut Rng, corruptions: usize) -> usize
    where
        T: WrappedTypesupport + PartialEq,
        F: Fn(&[u8]) -> Option<T>,
    {
        let mut taken = 0;
        let mut check = |b: &[u8]| {
            if let Some(ours) = read(b) {
                let theirs = T::from_serialized_bytes(b)
                    .unwrap_or_else(|e| panic!("reader took a payload r2r rejects ({e}): {b:?}"));
                assert!(ours == theirs, "{ours:?} != {theirs:?} for {b:?}");
                taken += 1;
            }
        };
        check(bytes);
        for cut in 0..bytes.len() {
            check(&bytes[..cut]);
        }
        // Every encapsulation header byte value (kind and options).
        for i in 0..4.min(bytes.len()) {
            for v in 0..=255u8 {
                let mut b = bytes.to_vec();
                b[i] = v;
                check(&b);
            }
        }
        for _ in 0..corruptions {
            let mut b = bytes.to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len() as u64);
                b[i] = rng.next() as u8;
            }
            check(&b);
        }
        taken
    }

    #[test]
    fn joint_states_read_as_r2r_reads_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut whole = 0;
        for _ in 0..60 {
            let n = rng.below(8);
            let f = |rng: &mut Rng, n: usize| -> Vec<f64> {
                (0..n)
                    .map(|_| f64::from_bits(rng.next()) % 1e3)
                    .map(|v| if v.is_nan() { 0.5 } else { v })
                    .collect()
            };
            let (nv, ne) = (rng.below(3) * n / 2, rng.below(2) * n);
            let m = JointState {
                header: header(&mut rng),
                name: (0..n).map(|_| rng.text()).collect(),
                position: f(&mut rng, n),
                velocity: f(&mut rng, nv),
                effort: f(&mut rng, ne),
            };
            let bytes = m.to_serialized_bytes().unwrap();
            assert_eq!(joint_state(&bytes).as_ref(), Some(&m), "whole message");
            whole += 1;
            // The whole message, and at least the padded variants of it.
            assert!(differential(&bytes, joint_state, &mut rng, 60) >= 2);
        }
        assert_eq!(whole, 60);
    }

    #[test]
    fn images_read_as_r2r_reads_them() {
        let mut rng = Rng(12345);
        for _ in 0..40 {
            let m = Image {
                header: header(&mut rng),
                height: rng.below(5) as u32,
                width: rng.below(5) as u32,
                encoding: ["rgb8", "bgr8", "mono8", "", "16UC1"][rng.below(5)].into(),
                is_bigendian: rng.below(2) as u8,
                step: rng.below(20) as u32,
                data: (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
            };
            let bytes = m.to_serialized_bytes().unwrap();
            assert_eq!(image(&bytes).as_ref(), Some(&m));
            differential(&bytes, image, &mut rng, 30);

            let c = CompressedImage {
                header: header(&mut rng),
                format: ["png", "jpeg", "rgb8; jpeg compressed bgr8", ""][rng.below(4)].into(),
                data: (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
            };
            let bytes = c.to_serialized_bytes().unwrap();
            assert_eq!(compressed_image(&bytes).as_ref(), Some(&c));
            differential(&bytes, compressed_image, &mut rng, 30);
        }
    }

    #[test]
    fn headers_read_as_r2r_reads_them() {
        let mut rng = Rng(777);
        for _ in 0..40 {
            let h = header(&mut rng);
            let stamp = (h.stamp.sec, h.stamp.nanosec);
            // A header alone, and at the start of a longer message.
            let alone = h.to_serialized_bytes().unwrap();
            let img = Image {
                header: h,
                ..Image::default()
            }
            .to_serialized_bytes()
            .unwrap();
            for bytes in [alone, img] {
                assert_eq!(header_stamp(&bytes), Some(stamp));
                let read = |b: &[u8]| {
                    let (sec, nanosec) = header_stamp(b)?;
                    let full = Header::from_serialized_bytes(b).ok()?;
                    // The stamp agrees with r2r wherever r2r reads the header.
                    assert_eq!((full.stamp.sec, full.stamp.nanosec), (sec, nanosec));
                    Some(full)
                };
                differential(&bytes, read, &mut rng, 30);
            }
        }
    }

    /// Big-endian payloads (encapsulation `00 00`) read like the little-endian ones, as
    /// they do through the rmw.
    #[test]
    fn big_endian_payloads() {
        let mut be = vec![0u8, 0, 0, 0];
        be.extend(5i32.to_be_bytes());
        be.extend(7u32.to_be_bytes());
        be.extend(2u32.to_be_bytes());
        be.extend(b"f\0");
        be.extend([0, 0]); // align to 4
        be.extend(1u32.to_be_bytes()); // one name
        be.extend(2u32.to_be_bytes());
        be.extend(b"a\0");
        be.extend([0, 0]);
        be.extend(1u32.to_be_bytes()); // one position, 8-aligned (body offset 32)
        be.extend(0.25f64.to_be_bytes());
        be.extend(0u32.to_be_bytes());
        be.extend(0u32.to_be_bytes());
        let ours = joint_state(&be).expect("reader takes big-endian CDR");
        let theirs = JointState::from_serialized_bytes(&be).expect("rmw takes big-endian CDR");
        assert_eq!(ours, theirs);
        assert_eq!(ours.position, vec![0.25]);
        assert_eq!((ours.header.stamp.sec, ours.header.stamp.nanosec), (5, 7));
    }

    /// Lengths far beyond the buffer are refused before allocating.
    #[test]
    fn huge_lengths_are_refused() {
        let m = JointState {
            name: vec!["a".into()],
            position: vec![1.0],
            ..Default::default()
        };
        let mut bytes = m.to_serialized_bytes().unwrap();
        // The name count sits after the header (4 + 4 + 4 + 1 -> padded to 16).
        bytes[4 + 16..4 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(joint_state(&bytes).is_none());
    }
}
