//! Documents and free-text notes: a `document` column (`type = "document"`)
//! names a file relative to the source folder (a scanned PDF, TIFF, JPEG or
//! PNG, a TXT or RTF note), listed by an index table (patient key, date,
//! type, author, file).
//!
//! The file's content type is read from its first bytes (its magic number)
//! and must agree with its extension: a PNG named `.pdf`, an unreadable or
//! missing file, an empty file or an unsupported type is an error that
//! rejects the index row (naming the index file, line and column). A good
//! file becomes a `Binary` (its `contentType`, and `data`: the base64 of the
//! exact bytes) and the row's attachment points at it: `url = Binary/<id>`,
//! `contentType`, `size`, `hash` (base64 of the SHA-1 of the bytes, as FHIR's
//! `Attachment.hash` defines it), `title` and `creation`. Hearth's store
//! seals every `Binary` body at rest (AES-256-GCM with the attachment key,
//! `store::cipher`).

use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Component, Path};

/// The document types read, by extension: content type and name.
const TYPES: &[(&[&str], &str, &str)] = &[
    (&["pdf"], "application/pdf", "PDF"),
    (&["tif", "tiff"], "image/tiff", "TIFF image"),
    (&["jpg", "jpeg", "jpe"], "image/jpeg", "JPEG image"),
    (&["png"], "image/png", "PNG image"),
    (&["txt", "text"], "text/plain", "text"),
    (&["rtf"], "application/rtf", "RTF document"),
];

/// Files larger than this are refused (`Attachment.size` is an
/// unsignedInt, and a Binary travels whole in one JSON body).
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// A document read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its content type (`application/pdf`, ...).
    pub content_type: &'static str,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
}

/// The content type and name of a file's content, by its first bytes;
/// `None` when no binary format matches (text, or unknown).
pub fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    let t = |ext: &str| {
        TYPES
            .iter()
            .find(|(e, _, _)| e.contains(&ext))
            .map(|(_, c, n)| (*c, *n))
    };
    if bytes.starts_with(b"%PDF-") {
        t("pdf")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        t("png")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        t("tif")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        t("jpg")
    } else if bytes.starts_with(b"{\\rtf") {
        t("rtf")
    } else {
        None
    }
}

/// Reads the document `name` (relative to `dir`) and checks its content
/// against its extension. The error says what is wrong with the file.
pub fn read(dir: &Path, name: &str) -> Result<Document, String> {
    let relative = Path::new(name);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{name}: a document is named relative to the source folder, inside it"
        ));
    }
    let ext = relative
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let Some((_, declared, declared_name)) =
        TYPES.iter().find(|(e, _, _)| e.contains(&ext.as_str()))
    else {
        return Err(format!(
            "{name}: not a supported document type (PDF, TIFF, JPEG, PNG, TXT, RTF)"
        ));
    };
    let path = dir.join(relative);
    let size = std::fs::metadata(&path)
        .map_err(|e| unreadable(name, &e))?
        .len();
    if size > MAX_BYTES {
        return Err(format!(
            "{name}: {size} bytes, more than the {MAX_BYTES} a document may have"
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| unreadable(name, &e))?;
    if bytes.is_empty() {
        return Err(format!("{name}: the file is empty"));
    }
    match sniff(&bytes) {
        Some((found, _)) if found == *declared => {}
        Some((found, found_name)) => {
            return Err(format!(
                "{name}: the content is a {found_name} ({found}), but the name says {declared_name} ({declared})"
            ));
        }
        None if *declared == "text/plain" => {
            if bytes.contains(&0) {
                return Err(format!(
                    "{name}: named as text, but the content is binary (NUL bytes)"
                ));
            }
        }
        None => {
            return Err(format!(
                "{name}: the content is not a {declared_name}: its first bytes match no document type"
            ));
        }
    }
    Ok(Document {
        content_type: declared,
        bytes,
    })
}

fn unreadable(name: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("{name}: no such file in the source folder")
    } else {
        format!("{name}: cannot read: {e}")
    }
}

/// FHIR's `Attachment.hash`: the base64 of the SHA-1 of the bytes.
pub fn attachment_hash(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(bytes))
}

/// The `Binary` holding `document` under `id`.
pub fn binary(id: &str, document: &Document) -> Value {
    json!({
        "resourceType": "Binary",
        "id": id,
        "contentType": document.content_type,
        "data": base64::engine::general_purpose::STANDARD.encode(&document.bytes),
    })
}

/// The attachment pointing at `Binary/<binary_id>`.
pub fn attachment(
    binary_id: &str,
    document: &Document,
    title: &str,
    creation: Option<&str>,
) -> Value {
    let mut a = json!({
        "contentType": document.content_type,
        "url": format!("Binary/{binary_id}"),
        "size": document.bytes.len(),
        "hash": attachment_hash(&document.bytes),
        "title": title,
    });
    if let Some(creation) = creation {
        a["creation"] = json!(creation);
    }
    a
}

/// Tiny, valid, deterministic documents for the sample export (no image
/// library: the bytes are put together by hand).
pub mod tiny {
    /// A one-page PDF saying `text` (ASCII letters, digits and spaces).
    pub fn pdf(text: &str) -> Vec<u8> {
        let text: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
            .collect();
        let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
            format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in bytes {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A 1×1 grey PNG of level `grey`.
    pub fn png(grey: u8) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        // 1×1, 8-bit greyscale, deflate, no filter, no interlace.
        chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
        let raw = [0u8, grey]; // filter type 0, one pixel
        let mut zlib = vec![0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF];
        zlib.extend_from_slice(&raw);
        zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
        chunk(&mut out, b"IDAT", &zlib);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    /// A 1×1 grey baseline TIFF (little-endian, uncompressed) of `grey`.
    pub fn tiff(grey: u8) -> Vec<u8> {
        let entries: [(u16, u16, u32); 8] = [
            (256, 3, 1), // ImageWidth
            (257, 3, 1), // ImageLength
            (258, 3, 8), // BitsPerSample
            (259, 3, 1), // Compression: none
            (262, 3, 1), // PhotometricInterpretation: black is zero
            (273, 4, 0), // StripOffsets (set below)
            (278, 3, 1), // RowsPerStrip
            (279, 4, 1), // StripByteCounts
        ];
        let ifd_len = 2 + entries.len() * 12 + 4;
        let pixel_at = (8 + ifd_len) as u32;
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, kind, value) in entries {
            let value = if tag == 273 { pixel_at } else { value };
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            if kind == 3 {
                out.extend_from_slice(&(value as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(grey);
        out
    }

    /// An 8×8 mid-grey baseline JPEG (JFIF): one block whose coefficients
    /// are all zero, with one-code Huffman tables. `comment` goes into a
    /// COM segment (so files differ).
    pub fn jpeg(comment: &str) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        out.extend_from_slice(&[
            0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
        ]);
        let comment = comment.as_bytes();
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(comment);
        out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
        out.extend_from_slice(&[1u8; 64]);
        out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
        for class in [0x00u8, 0x10] {
            out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 1]);
            out.extend_from_slice(&[0u8; 15]);
            out.push(0); // the one symbol: DC category 0 / AC end of block
        }
        out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
        // DC "0" and EOB "0", padded with ones.
        out.push(0x3F);
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_checked_against_the_extension() {
        let dir = tempfile::tempdir().expect("tmp");
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).expect("write");
        write("a.pdf", &tiny::pdf("Referral letter 1"));
        write("b.png", &tiny::png(200));
        write("c.TIF", &tiny::tiff(90));
        write("d.jpeg", &tiny::jpeg("d"));
        write("e.txt", b"Progress note\r\n");
        write("f.rtf", b"{\\rtf1\\ansi Hello}");
        write("wrong.pdf", &tiny::png(1));
        write("empty.jpg", b"");
        write("bin.txt", b"ab\0cd");
        write("g.docx", b"PK");
        write("h.pdf", b"hello");
        for (name, kind) in [
            ("a.pdf", "application/pdf"),
            ("b.png", "image/png"),
            ("c.TIF", "image/tiff"),
            ("d.jpeg", "image/jpeg"),
            ("e.txt", "text/plain"),
            ("f.rtf", "application/rtf"),
        ] {
            let d = read(dir.path(), name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.content_type, kind);
            assert_eq!(d.bytes, std::fs::read(dir.path().join(name)).expect("read"));
        }
        let e = |name: &str| read(dir.path(), name).expect_err(name);
        assert_eq!(
            e("wrong.pdf"),
            "wrong.pdf: the content is a PNG image (image/png), but the name says PDF (application/pdf)"
        );
        assert_eq!(
            e("missing.png"),
            "missing.png: no such file in the source folder"
        );
        assert_eq!(e("empty.jpg"), "empty.jpg: the file is empty");
        assert!(e("bin.txt").contains("binary"));
        assert!(e("g.docx").contains("not a supported document type"));
        assert!(e("h.pdf").contains("not a PDF"));
        assert!(e("../a.pdf").contains("inside it"));
    }

    #[test]
    fn the_hash_is_base64_sha1() {
        // SHA-1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d
        assert_eq!(attachment_hash(b"abc"), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
        let d = Document {
            content_type: "text/plain",
            bytes: b"abc".to_vec(),
        };
        let a = attachment("b1", &d, "t", Some("2020-01-01"));
        assert_eq!(a["size"], 3);
        assert_eq!(a["url"], "Binary/b1");
        assert_eq!(binary("b1", &d)["data"], "YWJj");
        assert!(
            fhir::validation::validate(&binary("b1", &d))
                .iter()
                .all(|i| !matches!(
                    i.severity,
                    fhir::outcome::Severity::Error | fhir::outcome::Severity::Fatal
                ))
        );
    }

    #[test]
    fn the_tiny_documents_are_well_formed() {
        let png = tiny::png(7);
        // IHDR's CRC as any PNG reader computes it.
        assert_eq!(&png[29..33], &[0x3A, 0x7E, 0x9B, 0x55]);
        let pdf = tiny::pdf("x");
        let text = String::from_utf8(pdf.clone()).expect("ascii");
        let xref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .expect("startxref");
        assert!(text[xref..].starts_with("xref"));
        let tiff = tiny::tiff(5);
        assert_eq!(tiff.len(), 8 + 2 + 8 * 12 + 4 + 1);
        assert_eq!(*tiff.last().expect("pixel"), 5);
        assert!(tiny::jpeg("a").ends_with(&[0xFF, 0xD9]));
        assert_eq!(sniff(&tiny::jpeg("a")).map(|s| s.0), Some("image/jpeg"));
    }
}
