//! Minimal NPY v1.0 reader/writer for little-endian f32 arrays in C order.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::files::atomic::write_atomic;

const MAGIC: &[u8] = b"\x93NUMPY";

/// The full NPY v1.0 header (magic, version, length, dict) byte for byte as NumPy ≥ 1.24 writes
/// it: spare spaces so the first axis could grow to 21 digits, then space padding and a newline
/// so the data starts at a multiple of 64 bytes (a full 64 when already aligned, as NumPy does).
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(21usize.saturating_sub(first.to_string().len())));
    }
    // magic (6) + version (2) + header length (2) + dict + '\n'
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat(64 - unpadded % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes `data` (C order, `shape`) as a `<f4` `.npy` file, atomically.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    ensure!(
        n == data.len(),
        "npy shape {shape:?} holds {n} values, got {}",
        data.len()
    );
    let header = npy_header(shape);
    write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&header)?;
        for v in data {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
}

/// Reads a `<f4`, C-order `.npy` file (v1.0 or v2.0 header); returns the shape and the data.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_npy_f32(&bytes).with_context(|| format!("bad npy file {}", path.display()))
}

fn parse_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    ensure!(
        bytes.len() >= 10 && bytes.starts_with(MAGIC),
        "not an npy file"
    );
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into()?) as usize, 12),
        v => bail!("unsupported npy version {v}"),
    };
    let header = bytes.get(start..start + len).context("truncated header")?;
    let header = std::str::from_utf8(header)?;
    ensure!(
        header.contains("'descr': '<f4'"),
        "dtype is not <f4: {header}"
    );
    ensure!(
        header.contains("'fortran_order': False"),
        "Fortran order is not supported"
    );
    let shape_txt = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split_once('('))
        .and_then(|(_, s)| s.split_once(')'))
        .map(|(s, _)| s)
        .context("no shape in header")?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + len..];
    ensure!(
        body.len() == 4 * n,
        "expected {n} values, file has {} bytes of data",
        body.len()
    );
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected headers: `np.save(io.BytesIO(), np.zeros(shape, np.float32))` with NumPy 2.4.6,
    /// header bytes `v[:10 + hlen]`, here as (dict, number of spaces before the newline).
    #[test]
    fn header_matches_numpy() {
        let cases: [(&[usize], &str, usize); 4] = [
            (&[2, 1, 3, 4], "(2, 1, 3, 4)", 52),
            (&[5], "(5,)", 60),
            (&[], "()", 62),
            (&[1, 1, 1200, 1800], "(1, 1, 1200, 1800)", 46),
        ];
        for (shape, dims, spaces) in cases {
            let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
            let mut want = b"\x93NUMPY\x01\x00v\x00".to_vec();
            want.extend_from_slice(format!("{dict}{}\n", " ".repeat(spaces)).as_bytes());
            assert_eq!(npy_header(shape), want, "shape {shape:?}");
        }
    }

    #[test]
    fn roundtrip() {
        let dir = std::env::temp_dir().join(format!("sam-cobot-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npy");
        let data: Vec<f32> = (0..24).map(|v| v as f32 * -0.5).collect();
        write_npy_f32(&path, &[2, 1, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 128 + 24 * 4);
        assert_eq!(&bytes[132..136], &(-0.5f32).to_le_bytes());
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2, 1, 3, 4], data));
        assert!(write_npy_f32(&path, &[2, 2], &[1.0]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
