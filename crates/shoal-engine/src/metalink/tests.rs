//! Unit tests of the Metalink parser: realistic v4 and v3 documents, and every error class.

use super::*;

fn hex_of(byte: u8, len: usize) -> String {
    hex::encode(&vec![byte; len])
}

fn v4(files: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <metalink xmlns=\"{NS_V4}\">\n<published>2026-11-23T12:00:00Z</published>\n\
             {files}</metalink>\n"
    )
}

fn v4_file(name: &str, inner: &str) -> String {
    format!("<file name=\"{name}\">\n{inner}<url>http://m.example/f</url>\n</file>\n")
}

fn urls(file: &MetalinkFile) -> Vec<(&str, Option<u32>, Option<&str>)> {
    file.urls
        .iter()
        .map(|u| (u.url.as_str(), u.priority, u.location.as_deref()))
        .collect()
}

#[test]
fn realistic_v4() {
    let sha256 = hex_of(0xab, 32);
    let md5 = hex_of(0x11, 16);
    let p = |b| hex_of(b, 32);
    let xml = v4(&format!(
        r#"<file name="images/debian-13.iso">
    <size>600000</size>
    <identity>Debian</identity>
    <version>13.0</version>
    <description>A netinst image</description>
    <hash type="md5">{md5}</hash>
    <hash type="sha-256">{sha256}</hash>
    <hash type="sha3-256">{unknown}</hash>
    <pieces length="262144" type="sha-256">
      <hash>{p0}</hash>
      <hash>{p1}</hash>
      <hash>{p2}</hash>
    </pieces>
    <pieces length="262144" type="sha3-256"><hash>00</hash></pieces>
    <url location="de" priority="20">https://ftp.de.example/debian-13.iso</url>
    <url priority="1" location="fr">http://fr.example/debian-13.iso</url>
    <url>https://fallback.example/debian-13.iso</url>
    <url location="us" priority="20">https://us.example/debian-13.iso</url>
    <url location="jp" priority="5">ftp://alice:hunter2@ftp.jp.example/debian-13.iso</url>
    <url priority="7">  http://fr.example/debian-13.iso  </url>
    <metaurl mediatype="torrent" priority="2">http://t.example/debian-13.torrent</metaurl>
  </file>
  <file name="SHA256SUMS">
    <size>0</size>
    <url priority="3">http://a.example/SHA256SUMS</url>
    <url priority="1">http://b.example/SHA256SUMS</url>
  </file>
"#,
        unknown = hex_of(0, 32),
        p0 = p(1),
        p1 = p(2),
        p2 = p(3),
    ));
    let doc = parse(&xml).unwrap();
    assert_eq!(doc.version, Version::V4);
    assert_eq!(doc.files.len(), 2);

    let iso = &doc.files[0];
    assert_eq!(iso.name, "debian-13.iso");
    assert_eq!(iso.size, Some(600_000));
    assert_eq!(
        urls(iso),
        [
            ("http://fr.example/debian-13.iso", Some(1), Some("fr")),
            ("https://ftp.de.example/debian-13.iso", Some(20), Some("de")),
            ("https://us.example/debian-13.iso", Some(20), Some("us")),
            ("https://fallback.example/debian-13.iso", None, None),
        ],
        "by priority, ties in document order, duplicates dropped"
    );
    let algos: Vec<_> = iso.hashes.iter().map(Checksum::algo).collect();
    assert_eq!(algos, [ChecksumAlgo::Sha256, ChecksumAlgo::Md5]);
    assert_eq!(iso.hashes[0].hex(), sha256);
    assert_eq!(iso.skipped_hashes, ["sha3-256"]);
    let pieces = iso.pieces.as_ref().unwrap();
    assert_eq!(pieces.algo, ChecksumAlgo::Sha256);
    assert_eq!(pieces.length, 262_144);
    assert_eq!(pieces.hashes, [vec![1; 32], vec![2; 32], vec![3; 32]]);
    assert_eq!(iso.skipped_urls.len(), 2);
    assert_eq!(
        iso.skipped_urls[0],
        SkippedUrl {
            url: "http://t.example/debian-13.torrent".into(),
            reason: SkipReason::Metadata("torrent".into())
        }
    );
    assert_eq!(iso.skipped_urls[1].reason, SkipReason::Scheme("ftp".into()));
    assert!(!iso.skipped_urls[1].url.contains("hunter2"));

    let sums = &doc.files[1];
    assert_eq!(sums.name, "SHA256SUMS");
    assert_eq!(sums.size, Some(0));
    assert!(sums.hashes.is_empty() && sums.pieces.is_none());
    assert!(sums.skipped_hashes.is_empty() && sums.skipped_urls.is_empty());
    assert_eq!(sums.urls[0].url.as_str(), "http://b.example/SHA256SUMS");
}

#[test]
fn v3_preference_becomes_priority() {
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="{NS_V3}" generator="MirrorBrain">
  <files>
    <file name="openSUSE.iso">
      <size>5</size>
      <verification>
        <hash type="md5">{md5}</hash>
        <hash type="sha1">{sha1}</hash>
        <hash type="sha256">{sha256}</hash>
        <pieces length="2" type="sha1">
          <hash piece="2">{p2}</hash>
          <hash piece="0">{p0}</hash>
          <hash piece="1">{p1}</hash>
        </pieces>
      </verification>
      <resources maxconnections="2">
        <url type="ftp" location="de" preference="100">ftp://ftp.example/o.iso</url>
        <url type="bittorrent" preference="100">http://t.example/o.iso.torrent</url>
        <url type="http" location="us" preference="50">http://us.example/o.iso</url>
        <url type="http" location="de" preference="100">http://de.example/o.iso</url>
        <url type="https" preference="0">https://last.example/o.iso</url>
        <url location="at">http://at.example/o.iso</url>
        <url type="http" preference="250">http://over.example/o.iso</url>
      </resources>
    </file>
  </files>
</metalink>"#,
        md5 = hex_of(1, 16),
        sha1 = hex_of(2, 20),
        sha256 = hex_of(3, 32),
        p0 = hex_of(10, 20),
        p1 = hex_of(11, 20),
        p2 = hex_of(12, 20),
    );
    let doc = parse(&xml).unwrap();
    assert_eq!(doc.version, Version::V3);
    let file = &doc.files[0];
    assert_eq!(file.size, Some(5));
    assert_eq!(
        urls(file),
        [
            ("http://de.example/o.iso", Some(1), Some("de")),
            ("http://over.example/o.iso", Some(1), None),
            ("http://us.example/o.iso", Some(51), Some("us")),
            ("https://last.example/o.iso", Some(101), None),
            ("http://at.example/o.iso", None, Some("at")),
        ]
    );
    let algos: Vec<_> = file.hashes.iter().map(Checksum::algo).collect();
    assert_eq!(
        algos,
        [ChecksumAlgo::Sha256, ChecksumAlgo::Sha1, ChecksumAlgo::Md5]
    );
    let pieces = file.pieces.as_ref().unwrap();
    assert_eq!(pieces.algo, ChecksumAlgo::Sha1);
    assert_eq!(pieces.hashes, [vec![10; 20], vec![11; 20], vec![12; 20]]);
    let reasons: Vec<_> = file.skipped_urls.iter().map(|s| &s.reason).collect();
    assert_eq!(
        reasons,
        [
            &SkipReason::Scheme("ftp".into()),
            &SkipReason::Metadata("bittorrent".into())
        ]
    );
}

#[test]
fn v3_piece_numbers_must_be_each_index_once() {
    for numbers in [["0", "0"], ["0", "2"], ["0", "x"]] {
        let xml = format!(
            r#"<metalink xmlns="{NS_V3}"><files><file name="f"><verification>
<pieces length="4" type="sha1"><hash piece="{}">{h}</hash><hash piece="{}">{h}</hash></pieces>
</verification><resources><url type="http">http://h/f</url></resources></file></files></metalink>"#,
            numbers[0],
            numbers[1],
            h = hex_of(0, 20),
        );
        assert!(
            matches!(parse(&xml), Err(MetalinkError::PieceIndex { line: 2, .. })),
            "{numbers:?}: {:?}",
            parse(&xml)
        );
    }
}

#[test]
fn malformed_xml_says_where() {
    let err = parse(
        "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n  <file name=\"a\">\n</metalink>",
    )
    .unwrap_err();
    let MetalinkError::Xml { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*line, *column), (3, 1), "{err}");
    assert!(
        err.to_string()
            .starts_with("malformed XML at line 3, column 1: "),
        "{err}"
    );
    assert!(matches!(parse(""), Err(MetalinkError::Xml { .. })));
    assert!(matches!(
        parse("not xml at all"),
        Err(MetalinkError::Xml { .. })
    ));
}

#[test]
fn dtds_are_refused() {
    let laughs = format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE m [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\n{}",
            v4(&v4_file("&b;", ""))
        );
    assert!(matches!(parse(&laughs), Err(MetalinkError::Xml { .. })));
}

#[test]
fn other_documents_are_not_metalinks() {
    for (xml, found) in [
        (
            "<metalink><file name=\"a\"/></metalink>",
            "<metalink> without a namespace",
        ),
        (
            "<metalink xmlns=\"http://example.org/\"/>",
            "<metalink> in namespace http://example.org/",
        ),
        (
            "<html xmlns=\"urn:ietf:params:xml:ns:metalink\"/>",
            "<html> in namespace urn:ietf:params:xml:ns:metalink",
        ),
    ] {
        assert_eq!(
            parse(xml),
            Err(MetalinkError::NotMetalink {
                found: found.into()
            })
        );
    }
    assert_eq!(parse(&v4("")), Err(MetalinkError::NoFiles));
    let v3_empty = format!("<metalink xmlns=\"{NS_V3}\"><files/></metalink>");
    assert_eq!(parse(&v3_empty), Err(MetalinkError::NoFiles));
}

#[test]
fn size_is_optional_and_pieces_then_unchecked() {
    let xml = v4(&v4_file(
        "f",
        &format!(
            "<pieces length=\"10\" type=\"sha-1\"><hash>{}</hash></pieces>",
            hex_of(0, 20)
        ),
    ));
    let file = &parse(&xml).unwrap().files[0];
    assert_eq!(file.size, None);
    assert_eq!(file.pieces.as_ref().unwrap().hashes.len(), 1);
}

#[test]
fn unknown_hash_types_are_skipped_and_named() {
    let xml = v4(&v4_file(
        "f",
        &format!(
            "<hash type=\"sha-384\">{a}</hash><hash type=\"SHA3-256\">{b}</hash>\
                 <hash>{b}</hash><hash type=\"sha-384\">{a}</hash>\
                 <hash type=\"SHA256\">{b}</hash>",
            a = hex_of(1, 48),
            b = hex_of(2, 32),
        ),
    ));
    let file = &parse(&xml).unwrap().files[0];
    assert_eq!(file.skipped_hashes, ["sha-384", "SHA3-256", "(no type)"]);
    assert_eq!(file.hashes.len(), 1);
    assert_eq!(file.hashes[0].algo(), ChecksumAlgo::Sha256);
}

#[test]
fn hostile_and_missing_names() {
    let xml = v4(&v4_file("../../etc/passwd", ""));
    assert_eq!(parse(&xml).unwrap().files[0].name, "passwd");
    let xml = v4(&v4_file("..\\..\\boot.ini", ""));
    assert_eq!(parse(&xml).unwrap().files[0].name, "boot.ini");
    let xml = v4(&v4_file("dir/.hidden", ""));
    assert_eq!(parse(&xml).unwrap().files[0].name, "hidden");

    let xml = v4(&v4_file("../..", ""));
    assert_eq!(
        parse(&xml),
        Err(MetalinkError::BadName {
            line: 4,
            name: "../..".into()
        })
    );
    let xml = v4(&format!(
        "{}{}",
        v4_file("a/x.iso", ""),
        v4_file("b/x.iso", "")
    ));
    assert_eq!(
        parse(&xml),
        Err(MetalinkError::DuplicateName {
            line: 7,
            name: "x.iso".into()
        })
    );
    let xml = v4("<file>\n<url>http://h/f</url></file>\n");
    assert_eq!(parse(&xml), Err(MetalinkError::MissingName { line: 4 }));
    let xml = v4(&v4_file("  ", ""));
    assert_eq!(parse(&xml), Err(MetalinkError::MissingName { line: 4 }));
}

#[test]
fn piece_count_must_match_a_known_size() {
    let hash = hex_of(0, 32);
    let xml = v4(&v4_file(
        "f",
        &format!(
            "<size>1048577</size>\n<pieces length=\"262144\" type=\"sha-256\">\n\
                 <hash>{hash}</hash><hash>{hash}</hash><hash>{hash}</hash><hash>{hash}</hash>\n\
                 </pieces>\n"
        ),
    ));
    let err = parse(&xml).unwrap_err();
    assert_eq!(
        err,
        MetalinkError::PieceCount {
            file: "f".into(),
            line: 6,
            size: 1_048_577,
            length: 262_144,
            expected: 5,
            actual: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "f (line 6): 4 piece hashes, but 1048577 bytes in pieces of 262144 make 5"
    );

    for length in ["0", "-1", "", "1e6"] {
        let xml = v4(&v4_file(
            "f",
            &format!("<pieces length=\"{length}\" type=\"sha-256\"><hash>{hash}</hash></pieces>"),
        ));
        assert!(
            matches!(parse(&xml), Err(MetalinkError::BadPieceLength { .. })),
            "{length}"
        );
    }
}

#[test]
fn bad_sizes_and_hashes() {
    for size in ["-1", "1.5", "12 MB", "", "99999999999999999999999"] {
        let xml = v4(&v4_file("f", &format!("<size>{size}</size>")));
        assert!(
            matches!(parse(&xml), Err(MetalinkError::BadSize { ref text, .. }) if text == size),
            "{size}"
        );
    }
    for digest in [hex_of(0, 31), format!("{}zz", hex_of(0, 31)), "".into()] {
        let xml = v4(&v4_file(
            "f",
            &format!("<hash type=\"sha-256\">{digest}</hash>"),
        ));
        assert!(
            matches!(
                parse(&xml),
                Err(MetalinkError::BadHash {
                    algo: ChecksumAlgo::Sha256,
                    ..
                })
            ),
            "{digest}"
        );
    }
    let xml = v4(&v4_file(
        "f",
        &format!(
            "<pieces length=\"1\" type=\"md5\"><hash>{}</hash></pieces>",
            hex_of(0, 15)
        ),
    ));
    assert!(matches!(parse(&xml), Err(MetalinkError::BadHash { .. })));

    let xml = v4(&v4_file(
        "f",
        &format!(
            "<hash type=\"md5\">{}</hash><hash type=\"MD5\">{}</hash>",
            hex_of(1, 16),
            hex_of(1, 16).to_uppercase()
        ),
    ));
    assert_eq!(
        parse(&xml).unwrap().files[0].hashes.len(),
        1,
        "same digest twice is fine"
    );
    let xml = v4(&v4_file(
        "f",
        &format!(
            "<hash type=\"md5\">{}</hash><hash type=\"md5\">{}</hash>",
            hex_of(1, 16),
            hex_of(2, 16)
        ),
    ));
    assert!(matches!(
        parse(&xml),
        Err(MetalinkError::ConflictingHash {
            algo: ChecksumAlgo::Md5,
            ..
        })
    ));
}

#[test]
fn a_file_needs_an_http_url() {
    let xml = v4(
            "<file name=\"f\">\n<url>ftp://h/f</url><url>magnet:?xt=urn:btih:00</url>\
             <url>not a url</url><metaurl mediatype=\"torrent\">http://h/f.torrent</metaurl>\n</file>\n",
        );
    assert_eq!(
        parse(&xml),
        Err(MetalinkError::NoUsableUrl {
            file: "f".into(),
            line: 4,
            skipped: 4
        })
    );
    let xml = v4("<file name=\"f\"><size>1</size></file>");
    assert!(matches!(
        parse(&xml),
        Err(MetalinkError::NoUsableUrl { skipped: 0, .. })
    ));
}

#[test]
fn skipped_sources_are_redacted_and_priorities_bounded() {
    let xml = v4("<file name=\"f\">\
             <url>ftp://bob:s3cret@h/f</url>\
             <url>http://bob:s3cret@h:99999/f</url>\
             <url>bob:s3cret@h/f</url>\
             <url priority=\"0\">http://a/f</url>\
             <url priority=\"1000000\">http://b/f</url>\
             <url priority=\"high\">http://c/f</url>\
             <url priority=\"999999\">https://u:pw@d/f?token=t</url>\
             </file>");
    let file = &parse(&xml).unwrap().files[0];
    assert_eq!(file.skipped_urls.len(), 3);
    for skipped in &file.skipped_urls {
        assert!(!skipped.url.contains("s3cret"), "{skipped:?}");
    }
    assert_eq!(file.skipped_urls[1].reason, SkipReason::Unparseable);
    assert_eq!(
        urls(file),
        [
            ("https://u:pw@d/f?token=t", Some(999_999), None),
            ("http://a/f", None, None),
            ("http://b/f", None, None),
            ("http://c/f", None, None),
        ],
        "kept URLs keep their credentials: they are needed to download"
    );
}

#[test]
fn foreign_elements_are_ignored() {
    let xml = format!(
        "<metalink xmlns=\"{NS_V4}\" xmlns:x=\"http://example.org/x\">\
             <x:file name=\"evil\"><url>http://h/evil</url></x:file>\
             <file name=\"good\"><x:url>http://h/x</x:url><url>http://h/good</url></file>\
             </metalink>"
    );
    let doc = parse(&xml).unwrap();
    assert_eq!(doc.files.len(), 1);
    assert_eq!(urls(&doc.files[0]), [("http://h/good", None, None)]);
}
