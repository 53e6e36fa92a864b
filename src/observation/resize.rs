//! Bilinear resize tables and the row kernels behind [`ImagePreprocessor`].
//!
//! The sampling matches PyTorch's `F.interpolate(mode="bilinear", align_corners=False,
//! antialias=False)` (`aten/src/ATen/native/UpSample.h`): for output index `d`,
//! `src = max((d + 0.5) * in / out - 0.5, 0)`, `i0 = min(floor(src), in - 1)`,
//! `i1 = i0 + 1` clamped to the edge, `w1 = clamp(src - i0, 0, 1)`, `w0 = 1 - w1`, all in
//! `f32` as PyTorch computes it for `float32` tensors. With `in == out`, `src == d`,
//! `w0 == 1`, `w1 == 0`, so the result is an exact copy.
//!
//! The resize is separable: each needed input row is interpolated horizontally into three
//! `f32` planes (converted from `u8` through a 256-entry table, already scaled to `[0, 1]`),
//! then two such rows are blended vertically into the output. Consecutive output rows that
//! share input rows (upscaling) reuse them.
//!
//! [`ImagePreprocessor`]: super::ImagePreprocessor

/// `LUT[v] == v as f32 / 255.0`, so that an identity resize is bit-exact `v / 255`.
static LUT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

/// One output sample: two source indices and their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub w0: f32,
    pub w1: f32,
}

/// Fills `taps` with the PyTorch half-pixel bilinear taps for resizing `in_len` to
/// `out_len` samples. Both must be non-zero. Every index is `< in_len`.
pub(crate) fn compute_taps(in_len: usize, out_len: usize, taps: &mut Vec<Tap>) {
    taps.clear();
    if in_len == 0 || out_len == 0 {
        return;
    }
    let scale = in_len as f32 / out_len as f32;
    let last = in_len - 1;
    taps.extend((0..out_len).map(|d| {
        let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        // `src` is finite and >= 0; the cast saturates and the `min` keeps it in range
        // even where f32 rounding of huge sizes would step past the edge.
        let i0 = (src.floor() as usize).min(last);
        let w1 = (src - i0 as f32).clamp(0.0, 1.0);
        Tap {
            i0,
            i1: if i0 < last { i0 + 1 } else { i0 },
            w0: 1.0 - w1,
            w1,
        }
    }));
}

/// Resize tables for one input size.
#[derive(Debug, Default)]
pub(crate) struct ResizePlan {
    in_w: usize,
    in_h: usize,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
}

impl ResizePlan {
    /// Recomputes the tables unless they already describe `in_w x in_h -> out_w x out_h`.
    pub fn prepare(&mut self, in_w: usize, in_h: usize, out_w: usize, out_h: usize) {
        if self.in_w == in_w
            && self.in_h == in_h
            && self.xs.len() == out_w
            && self.ys.len() == out_h
        {
            return;
        }
        compute_taps(in_w, out_w, &mut self.xs);
        compute_taps(in_h, out_h, &mut self.ys);
        self.in_w = in_w;
        self.in_h = in_h;
    }
}

/// Two horizontally-resized input rows (3 planes x `out_w` each) and which rows they hold.
#[derive(Debug, Default)]
pub(crate) struct RowCache {
    buf: Vec<f32>,
    held: [Option<usize>; 2],
}

impl RowCache {
    fn reset(&mut self, out_w: usize) {
        let n = 6 * out_w;
        if self.buf.len() != n {
            self.buf.clear();
            self.buf.resize(n, 0.0);
        }
        self.held = [None, None];
    }
}

/// A source pixel layout: bytes per pixel and the byte offsets of R, G and B.
pub(crate) trait PixelLayout {
    const CH: usize;
    const R: usize;
    const G: usize;
    const B: usize;
}

macro_rules! layout {
    ($name:ident, $ch:expr, $r:expr, $g:expr, $b:expr) => {
        pub(crate) struct $name;
        impl PixelLayout for $name {
            const CH: usize = $ch;
            const R: usize = $r;
            const G: usize = $g;
            const B: usize = $b;
        }
    };
}
layout!(Rgb, 3, 0, 1, 2);
layout!(Bgr, 3, 2, 1, 0);
layout!(Rgba, 4, 0, 1, 2);
layout!(Bgra, 4, 2, 1, 0);
layout!(Mono, 1, 0, 0, 0);

/// Horizontal pass: one source row (`in_w * CH` bytes) into planar R, G, B of `xs.len()`.
#[inline]
fn hpass<L: PixelLayout>(row: &[u8], xs: &[Tap], dst: &mut [f32]) {
    let w = xs.len();
    let (r, rest) = dst.split_at_mut(w);
    let (g, b) = rest.split_at_mut(w);
    for (((t, r), g), b) in xs.iter().zip(r).zip(g).zip(b) {
        // Taps index pixels < in_w and `row` holds in_w pixels, so these are in bounds.
        let p0 = &row[t.i0 * L::CH..][..L::CH];
        let p1 = &row[t.i1 * L::CH..][..L::CH];
        *r = LUT[p0[L::R] as usize] * t.w0 + LUT[p1[L::R] as usize] * t.w1;
        *g = LUT[p0[L::G] as usize] * t.w0 + LUT[p1[L::G] as usize] * t.w1;
        *b = LUT[p0[L::B] as usize] * t.w0 + LUT[p1[L::B] as usize] * t.w1;
    }
}

/// Resizes a validated image into CHW `out` (`3 * ys.len() * xs.len()`).
///
/// `data` holds `in_h` rows of `step` bytes, each starting with `in_w * L::CH` pixel bytes;
/// `plan` must have been prepared for this input size and `out`'s size.
pub(crate) fn resize_into<L: PixelLayout>(
    plan: &ResizePlan,
    rows: &mut RowCache,
    data: &[u8],
    step: usize,
    out: &mut [f32],
) {
    if plan.in_w == plan.xs.len() && plan.in_h == plan.ys.len() {
        copy_into::<L>(plan.in_w, plan.in_h, data, step, out);
    } else {
        separable_into::<L>(plan, rows, data, step, out);
    }
}

/// The output size is the input size: every tap is `(d, w0 = 1, w1 = 0)`, so the separable
/// resize reduces to `LUT[v]` per sample; this writes exactly that (bit-identical, a test
/// checks it) without the row passes.
fn copy_into<L: PixelLayout>(w: usize, h: usize, data: &[u8], step: usize, out: &mut [f32]) {
    let plane = w * h;
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    for y in 0..h {
        let row = &data[y * step..][..w * L::CH];
        let r = &mut r_out[y * w..][..w];
        let g = &mut g_out[y * w..][..w];
        let b = &mut b_out[y * w..][..w];
        for (((px, r), g), b) in row.chunks_exact(L::CH).zip(r).zip(g).zip(b) {
            *r = LUT[px[L::R] as usize];
            *g = LUT[px[L::G] as usize];
            *b = LUT[px[L::B] as usize];
        }
    }
}

/// The general case of [`resize_into`].
fn separable_into<L: PixelLayout>(
    plan: &ResizePlan,
    rows: &mut RowCache,
    data: &[u8],
    step: usize,
    out: &mut [f32],
) {
    let out_w = plan.xs.len();
    let out_h = plan.ys.len();
    let plane = out_w * out_h;
    let row_bytes = plan.in_w * L::CH;
    rows.reset(out_w);
    let src_row = |y: usize| &data[y * step..][..row_bytes];

    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    let mut planes_out = [r_out, g_out, b_out];

    for (oy, ty) in plan.ys.iter().enumerate() {
        // Find or fill a slot for each of the two source rows, never evicting the other.
        let find = |held: &[Option<usize>; 2], y| held.iter().position(|&h| h == Some(y));
        let s0 = match find(&rows.held, ty.i0) {
            Some(s) => s,
            None => {
                let s = if rows.held[0] == Some(ty.i1) { 1 } else { 0 };
                hpass::<L>(
                    src_row(ty.i0),
                    &plan.xs,
                    &mut rows.buf[s * 3 * out_w..][..3 * out_w],
                );
                rows.held[s] = Some(ty.i0);
                s
            }
        };
        let s1 = match find(&rows.held, ty.i1) {
            Some(s) => s,
            None => {
                let s = 1 - s0;
                hpass::<L>(
                    src_row(ty.i1),
                    &plan.xs,
                    &mut rows.buf[s * 3 * out_w..][..3 * out_w],
                );
                rows.held[s] = Some(ty.i1);
                s
            }
        };

        let a = &rows.buf[s0 * 3 * out_w..][..3 * out_w];
        let b = &rows.buf[s1 * 3 * out_w..][..3 * out_w];
        for (c, plane_out) in planes_out.iter_mut().enumerate() {
            let dst = &mut plane_out[oy * out_w..][..out_w];
            let ra = &a[c * out_w..][..out_w];
            let rb = &b[c * out_w..][..out_w];
            for ((d, &va), &vb) in dst.iter_mut().zip(ra).zip(rb) {
                *d = va * ty.w0 + vb * ty.w1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_is_v_over_255() {
        assert_eq!(LUT[0], 0.0);
        assert_eq!(LUT[255], 1.0);
        assert_eq!(LUT[128], 128.0f32 / 255.0);
    }

    #[test]
    fn identity_taps_are_exact() {
        let mut t = Vec::new();
        compute_taps(7, 7, &mut t);
        for (d, tap) in t.iter().enumerate() {
            assert_eq!(tap.i0, d);
            assert_eq!((tap.w0, tap.w1), (1.0, 0.0));
        }
    }

    #[test]
    fn taps_follow_torch_half_pixel_formula() {
        // 2 -> 3: scale 2/3; src = (d + 0.5) * 2/3 - 0.5 = -1/6, 1/2, 7/6.
        let mut t = Vec::new();
        compute_taps(2, 3, &mut t);
        assert_eq!((t[0].i0, t[0].i1, t[0].w1), (0, 1, 0.0)); // clamped to 0
        assert_eq!((t[1].i0, t[1].i1), (0, 1));
        assert!((t[1].w1 - 0.5).abs() < 1e-6);
        // i0 = 1 is the last index, so i1 stays 1 and both taps read the edge.
        assert_eq!((t[2].i0, t[2].i1), (1, 1));
        assert!((t[2].w1 - 1.0 / 6.0).abs() < 1e-6);
    }

    /// The same-size copy equals the separable resize bit for bit, for every layout, with
    /// row padding.
    #[test]
    fn same_size_copy_equals_the_separable_path() {
        fn check<L: PixelLayout>() {
            for (w, h) in [(1usize, 1usize), (5, 3), (64, 64), (17, 9)] {
                let step = w * L::CH + 3;
                let data: Vec<u8> = (0..step * h).map(|i| (i * 37 % 251) as u8).collect();
                let mut plan = ResizePlan::default();
                plan.prepare(w, h, w, h);
                let mut rows = RowCache::default();
                let mut fast = vec![f32::NAN; 3 * w * h];
                let mut general = vec![f32::NAN; 3 * w * h];
                resize_into::<L>(&plan, &mut rows, &data, step, &mut fast);
                separable_into::<L>(&plan, &mut rows, &data, step, &mut general);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&general), "{w}x{h}, {} channels", L::CH);
            }
        }
        check::<Rgb>();
        check::<Bgr>();
        check::<Rgba>();
        check::<Bgra>();
        check::<Mono>();
    }

    #[test]
    fn taps_stay_in_bounds_for_extreme_ratios() {
        let mut t = Vec::new();
        for (i, o) in [(1, 1000), (1000, 1), (3, 2), (4096, 224), (1 << 30, 3)] {
            compute_taps(i, o, &mut t);
            assert_eq!(t.len(), o);
            for tap in &t {
                assert!(tap.i0 < i && tap.i1 < i, "{i}->{o}: {tap:?}");
                assert!((tap.w0 + tap.w1 - 1.0).abs() < 1e-6);
                assert!((0.0..=1.0).contains(&tap.w0) && (0.0..=1.0).contains(&tap.w1));
            }
        }
    }
}
