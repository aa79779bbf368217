//! ggml tensor types and dequantization to f32.
//!
//! Block layouts follow ggml (`ggml-common.h`, `dequantize_row_*` in `ggml-quants.c`) exactly. A
//! block of `QK` elements is stored as a fixed number of bytes; within a row, blocks follow each
//! other, and rows follow each other, so a whole tensor dequantizes block by block.

use std::fmt;

use anyhow::{bail, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// Every ggml type a GGUF file may name. Only some can be dequantized (see [`GgmlType::supported`]);
/// the rest are known so that the reader can size and skip them and errors can name them.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Elements per super-block of the k-quants.
const QK_K: usize = 256;

/// Decodes one block (its bytes) into its elements.
type BlockDecoder = fn(&[u8], &mut [f32]);

impl GgmlType {
    pub fn from_tag(tag: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match tag {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    pub fn tag(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            IQ4_NL => (32, 18),
            MXFP4 => (32, 17),
            Q2_K => (QK_K, 84),
            Q3_K => (QK_K, 110),
            Q4_K => (QK_K, 144),
            Q5_K => (QK_K, 176),
            Q6_K => (QK_K, 210),
            Q8_K => (QK_K, 292),
            IQ2_XXS => (QK_K, 66),
            IQ2_XS => (QK_K, 74),
            IQ3_XXS => (QK_K, 98),
            IQ1_S => (QK_K, 50),
            IQ3_S => (QK_K, 110),
            IQ2_S => (QK_K, 82),
            IQ4_XS => (QK_K, 136),
            IQ1_M => (QK_K, 56),
            TQ1_0 => (QK_K, 54),
            TQ2_0 => (QK_K, 66),
        }
    }

    /// The per-block decoder, for the types this module can dequantize.
    fn decoder(self) -> Option<BlockDecoder> {
        use GgmlType::*;
        Some(match self {
            F32 => block_f32,
            F16 => block_f16,
            BF16 => block_bf16,
            Q4_0 => block_q4_0,
            Q4_1 => block_q4_1,
            Q5_0 => block_q5_0,
            Q5_1 => block_q5_1,
            Q8_0 => block_q8_0,
            Q2_K => block_q2_k,
            Q3_K => block_q3_k,
            Q4_K => block_q4_k,
            Q5_K => block_q5_k,
            Q6_K => block_q6_k,
            Q8_K => block_q8_k,
            _ => return None,
        })
    }

    pub fn supported(self) -> bool {
        self.decoder().is_some()
    }

    /// Names of the types [`dequantize`] accepts, for error messages.
    pub fn supported_names() -> String {
        (0..64)
            .filter_map(GgmlType::from_tag)
            .filter(|t| t.supported())
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Dequantizes `bytes` (whole blocks of type `ty`) into `out`, which must hold exactly the number
/// of elements those blocks encode.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let Some(decode) = ty.decoder() else {
        bail!(
            "unsupported tensor type {ty} (supported: {})",
            GgmlType::supported_names()
        );
    };
    let (qk, block_bytes) = ty.block();
    if bytes.len() % block_bytes != 0 || out.len() != bytes.len() / block_bytes * qk {
        bail!(
            "{ty}: {} bytes do not hold {} elements in blocks of {qk} elements / {block_bytes} bytes",
            bytes.len(),
            out.len()
        );
    }
    // Enough blocks per task to amortise scheduling.
    let per_task = (16384 / qk).max(1);
    out.par_chunks_mut(qk * per_task)
        .zip(bytes.par_chunks(block_bytes * per_task))
        .for_each(|(y, x)| {
            for (yb, xb) in y.chunks_exact_mut(qk).zip(x.chunks_exact(block_bytes)) {
                decode(xb, yb);
            }
        });
    Ok(())
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn block_f32(x: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
}

fn block_f16(x: &[u8], y: &mut [f32]) {
    y[0] = f16_at(x, 0);
}

fn block_bf16(x: &[u8], y: &mut [f32]) {
    y[0] = bf16::from_le_bytes([x[0], x[1]]).to_f32();
}

/// `{f16 d; u8 qs[16]}`: `(q - 8) * d`, low nibbles are elements 0..16, high nibbles 16..32.
fn block_q4_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let qs = &x[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `{f16 d; f16 m; u8 qs[16]}`: `q * d + m`.
fn block_q4_1(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let m = f16_at(x, 2);
    let qs = &x[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// `{f16 d; u8 qh[4]; u8 qs[16]}`: 5-bit `q - 16`, bit 4 of element j in bit j of `qh`.
fn block_q5_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    let qs = &x[6..22];
    for j in 0..16 {
        let hi0 = ((qh >> j) << 4) & 0x10;
        let hi1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((qs[j] as u32 & 0x0f) | hi0) as i32 - 16;
        let x1 = ((qs[j] as u32 >> 4) | hi1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `{f16 d; f16 m; u8 qh[4]; u8 qs[16]}`: 5-bit `q * d + m`.
fn block_q5_1(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let m = f16_at(x, 2);
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    let qs = &x[8..24];
    for j in 0..16 {
        let hi0 = ((qh >> j) << 4) & 0x10;
        let hi1 = (qh >> (j + 12)) & 0x10;
        let x0 = (qs[j] as u32 & 0x0f) | hi0;
        let x1 = (qs[j] as u32 >> 4) | hi1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// `{f16 d; i8 qs[32]}`: `q * d`.
fn block_q8_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    for j in 0..32 {
        y[j] = x[2 + j] as i8 as f32 * d;
    }
}

/// `{u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}`: 2-bit quants in 16 groups of 16, each group with
/// a 4-bit scale (low nibble) and a 4-bit min (high nibble).
fn block_q2_k(x: &[u8], y: &mut [f32]) {
    let scales = &x[0..16];
    let qs = &x[16..80];
    let d = f16_at(x, 80);
    let dmin = f16_at(x, 82);
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0f) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `{u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}`: 3-bit quants (2 low bits in `qs`, the high
/// bit in `hmask`, subtracting 4 when it is clear), 16 groups with 6-bit signed scales.
fn block_q3_k(x: &[u8], y: &mut [f32]) {
    let hmask = &x[0..32];
    let qs = &x[32..96];
    let packed = &x[96..108];
    let d_all = f16_at(x, 108);

    // Unpack the 16 6-bit scales exactly as ggml does with its kmask1/kmask2 word tricks.
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut scales = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, b) in w.to_le_bytes().iter().enumerate() {
            scales[4 * i + k] = *b as i8;
        }
    }

    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let idx = part * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let sub = if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `{f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}`: 4-bit quants in 8 sub-blocks of 32, each with
/// a 6-bit scale and min: `d * sc * q - dmin * m`.
fn block_q4_k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let scales = &x[4..16];
    let qs = &x[16..144];
    for j in 0..4 {
        let q = &qs[32 * j..32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let yb = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            yb[l] = d1 * (q[l] & 0x0f) as f32 - m1;
            yb[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `{f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}`: Q4_K with a fifth bit from `qh`.
fn block_q5_k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let scales = &x[4..16];
    let qh = &x[16..48];
    let qs = &x[48..176];
    for j in 0..4 {
        let ql = &qs[32 * j..32 * j + 32];
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let yb = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            yb[l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - m1;
            yb[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// `{u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}`: 6-bit quants minus 32, 16 groups of 16 with
/// signed 8-bit scales.
fn block_q6_k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 208);
    for n in 0..2 {
        let ql = &x[64 * n..64 * n + 64];
        let qh = &x[128 + 32 * n..128 + 32 * n + 32];
        let sc = &x[192 + 8 * n..192 + 8 * n + 8];
        let yb = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | (qh[l] & 3) << 4) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) as i32 - 32;
            let q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) as i32 - 32;
            yb[l] = d * (sc[is] as i8 as f32) * q1 as f32;
            yb[l + 32] = d * (sc[is + 2] as i8 as f32) * q2 as f32;
            yb[l + 64] = d * (sc[is + 4] as i8 as f32) * q3 as f32;
            yb[l + 96] = d * (sc[is + 6] as i8 as f32) * q4 as f32;
        }
    }
}

/// `{f32 d; i8 qs[256]; i16 bsums[16]}`: `q * d` (the block sums only speed up dot products).
fn block_q8_k(x: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    for j in 0..QK_K {
        y[j] = x[4 + j] as i8 as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn run(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
        let (qk, nb) = ty.block();
        let mut out = vec![f32::NAN; bytes.len() / nb * qk];
        dequantize(ty, bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn plain_floats() {
        let f32s: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(run(GgmlType::F32, &f32s), [1.5, -2.25]);
        let f16s: Vec<u8> = [0.5f32, -3.0].iter().flat_map(|&v| f16_bytes(v)).collect();
        assert_eq!(run(GgmlType::F16, &f16s), [0.5, -3.0]);
        // bf16 0x3FC0 = 1.5, 0xC040 = -3.0
        assert_eq!(run(GgmlType::BF16, &[0xC0, 0x3F, 0x40, 0xC0]), [1.5, -3.0]);
    }

    #[test]
    fn q4_0_by_hand() {
        // Byte j holds element j (low nibble j) and element j+16 (high nibble 15-j).
        let mut b = f16_bytes(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = run(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5, "element {j}");
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5, "element {}", j + 16);
        }
    }

    #[test]
    fn q4_1_by_hand() {
        let mut b = f16_bytes(0.25).to_vec();
        b.extend(f16_bytes(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = run(GgmlType::Q4_1, &b);
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.25 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 0.25 - 1.0);
        }
    }

    #[test]
    fn q8_0_by_hand() {
        // Two blocks: the second starts right after the 34 bytes of the first.
        let mut b = Vec::new();
        for d in [0.5f32, 2.0] {
            b.extend(f16_bytes(d));
            b.extend((0..32i8).map(|j| (j - 16) as u8));
        }
        let y = run(GgmlType::Q8_0, &b);
        for j in 0..32 {
            assert_eq!(y[j], (j as f32 - 16.0) * 0.5);
            assert_eq!(y[32 + j], (j as f32 - 16.0) * 2.0);
        }
    }

    #[test]
    fn q8_k_by_hand() {
        let mut b = 0.25f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|j| (j as u8).wrapping_sub(128)));
        b.extend([0u8; 32]);
        let y = run(GgmlType::Q8_K, &b);
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 128.0) * 0.25);
        }
    }

    /// One block of pseudo-random bytes with the scale fields set to sane values.
    fn pattern_block(ty: GgmlType) -> Vec<u8> {
        let (_, nb) = ty.block();
        let mut b: Vec<u8> = (0..nb).map(|i| ((i * 73 + 41) % 251) as u8).collect();
        let mut put = |off: usize, v: f32| b[off..off + 2].copy_from_slice(&f16_bytes(v));
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 => put(0, 0.5),
            Q4_1 | Q5_1 | Q4_K | Q5_K => {
                put(0, 0.5);
                put(2, 0.25);
            }
            Q2_K => {
                put(80, 0.5);
                put(82, 0.25);
            }
            Q3_K => put(108, 0.5),
            Q6_K => put(208, 0.5),
            _ => unreachable!(),
        }
        b
    }

    /// Reference values from the `gguf` Python package (0.19, `gguf.quants.dequantize`) on
    /// [`pattern_block`]: `sum(y[i] * (i % 7 + 1))` and a few elements.
    #[test]
    fn matches_gguf_python_package() {
        use GgmlType::*;
        type Reference<'a> = (GgmlType, f64, &'a [(usize, f32)]);
        #[rustfmt::skip]
        let reference: &[Reference] = &[
            (Q4_0, -14.0, &[(0, 1.5), (1, 0.5), (2, -3.0), (3, 1.5), (15, 1.5), (16, 1.5), (31, -3.5)]),
            (Q4_1, 489.0, &[(0, 1.25), (1, 5.75), (2, 2.25), (3, 1.25), (15, 6.75), (16, 2.75), (31, 5.25)]),
            (Q5_0, -47.5, &[(0, 2.0), (1, 1.0), (2, -2.5), (3, 2.0), (15, -6.0), (16, -1.0), (31, 2.0)]),
            (Q5_1, 915.0, &[(0, 5.75), (1, 10.25), (2, 1.25), (3, 5.75), (15, 11.25), (16, 3.75), (31, 6.75)]),
            (Q8_0, -220.0, &[(0, -34.5), (1, 4.5), (2, 41.0), (3, -50.5), (15, 13.5), (16, 50.0), (31, -32.5)]),
            (Q2_K, 3465.0, &[(0, 4.0), (1, 13.0), (2, -0.5), (3, 4.0), (127, 2.25), (128, 14.75), (255, -2.0)]),
            (Q3_K, -1492.0, &[(0, 21.0), (1, -10.5), (2, 10.5), (3, 21.0), (127, -1.0), (128, -0.5), (255, 7.5)]),
            (Q4_K, 110974.5, &[(0, 102.25), (1, 84.25), (2, 21.25), (3, 102.25), (127, 43.25), (128, 113.5), (255, 16.0)]),
            (Q5_K, 272683.0, &[(0, 264.25), (1, 201.25), (2, -5.75), (3, 219.25), (127, 168.25), (128, 83.5), (255, 26.0)]),
            (Q6_K, -88786.5, &[(0, 4.5), (1, 9.0), (2, -10.5), (3, 4.5), (127, -45.0), (128, 788.5), (255, 46.0)]),
        ];
        for &(ty, checksum, picks) in reference {
            let y = run(ty, &pattern_block(ty));
            let sum: f64 = y
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * (i % 7 + 1) as f64)
                .sum();
            assert_eq!(sum, checksum, "{ty} checksum");
            for &(i, v) in picks {
                assert_eq!(y[i], v, "{ty} element {i}");
            }
        }
    }

    #[test]
    fn rejects_unsupported_and_ragged_input() {
        let err = dequantize(GgmlType::IQ2_XXS, &[0; 66], &mut [0.0; 256]).unwrap_err();
        assert!(err.to_string().contains("IQ2_XXS"), "{err}");
        assert!(dequantize(GgmlType::Q4_0, &[0; 17], &mut [0.0; 32]).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 18], &mut [0.0; 31]).is_err());
    }

    #[test]
    fn tags_round_trip() {
        for tag in 0..64 {
            if let Some(t) = GgmlType::from_tag(tag) {
                assert_eq!(t.tag(), tag);
            }
        }
    }
}
