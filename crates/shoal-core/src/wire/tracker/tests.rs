use super::*;

fn key() -> UrlKey {
    UrlKey {
        url: "https://example.com/a.iso".into(),
        size: 10,
        etag: Some("\"e\"".into()),
        last_modified: None,
    }
}

#[test]
fn swarm_ids_hash_the_tag_and_every_part_of_the_key() {
    let k = key();
    let mut expected = b"shoal url swarm v1\0".to_vec();
    expected.extend_from_slice(&25u64.to_be_bytes());
    expected.extend_from_slice(b"https://example.com/a.iso");
    expected.extend_from_slice(&10u64.to_be_bytes());
    expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 3]);
    expected.extend_from_slice(b"\"e\"");
    expected.push(0);
    assert_eq!(
        k.swarm_id(),
        ContentId::from_bytes(*blake3::hash(&expected).as_bytes())
    );
    // An absent validator and an empty one are different versions, and so are the same
    // text as etag and as last_modified.
    let empty = UrlKey {
        etag: Some(String::new()),
        ..key()
    };
    let none = UrlKey {
        etag: None,
        ..key()
    };
    let moved = UrlKey {
        etag: None,
        last_modified: Some("\"e\"".into()),
        ..key()
    };
    let ids = [
        k.swarm_id(),
        empty.swarm_id(),
        none.swarm_id(),
        moved.swarm_id(),
    ];
    for (i, a) in ids.iter().enumerate() {
        assert!(ids[i + 1..].iter().all(|b| a != b), "{ids:?}");
    }
}

#[test]
fn swarm_digests_round_trip_and_check_lengths() {
    let pieces = [Some([1u8; 32]), None, Some([3u8; 32])];
    let digests = SwarmDigests::of(&pieces);
    let text = serde_json::to_string(&digests).unwrap();
    let expected = format!(
        r#"{{"known":"a0","digests":"{}{}"}}"#,
        "01".repeat(32),
        "03".repeat(32)
    );
    assert_eq!(text, expected);
    let back: SwarmDigests = serde_json::from_str(&text).unwrap();
    assert_eq!(back.to_digests(3).unwrap(), pieces);
    let known = [(0, [1u8; 32]), (2, [3u8; 32]), (7, [9u8; 32])].into();
    assert_eq!(SwarmDigests::from_known(3, &known), digests);

    assert!(matches!(
        back.to_digests(9),
        Err(SwarmDigestsError::Known(PackedBitsError::Length { .. }))
    ));
    let short = r#"{"known":"e0","digests":""}"#;
    let short: SwarmDigests = serde_json::from_str(short).unwrap();
    assert_eq!(
        short.to_digests(3),
        Err(SwarmDigestsError::Count {
            known: 3,
            actual: 0
        })
    );
    assert!(serde_json::from_str::<SwarmDigests>(r#"{"known":"","digests":"0102"}"#).is_err());
    assert!(serde_json::from_str::<SwarmDigests>(r#"{"known":"","digests":"zz"}"#).is_err());
    assert_eq!(SwarmDigests::of(&[]).to_digests(0).unwrap(), vec![]);
}

#[test]
fn digests_since_a_piece_leave_out_the_earlier_ones() {
    let d = |b: u8| Some([b; 32]);
    let pieces = [d(1), None, d(3), d(4), None, None, None, None, d(9), d(10)];
    let all = SwarmDigests::of(&pieces);
    assert_eq!(all.since(0), all);
    let later = all.since(3);
    let mut expected = pieces;
    expected[..3].fill(None);
    assert_eq!(later.to_digests(10).unwrap(), expected);
    assert_eq!(later, SwarmDigests::of(&expected));
    // Past the last piece (the piece count or more): none, and still the layout's bitfield.
    let none = all.since(10);
    assert_eq!(none.to_digests(10).unwrap(), vec![None; 10]);
    assert_eq!(all.since(u32::MAX), none);
}

#[test]
fn swarm_request_shapes() {
    let text =
        r#"{"key":{"url":"https://h/f","size":8},"layout":{"size":8,"piece_size":4},"agent":"a"}"#;
    let create: CreateSwarmRequest = serde_json::from_str(text).unwrap();
    assert_eq!(create.layout.piece_count(), 2);
    assert_eq!(serde_json::to_string(&create).unwrap(), text);
    let publish = PublishDigestsRequest {
        pieces: vec![PieceDigestEntry::new(1, &[0xab; 32])],
    };
    assert_eq!(
        serde_json::to_string(&publish).unwrap(),
        format!(
            r#"{{"pieces":[{{"index":1,"digest":"{}"}}]}}"#,
            "ab".repeat(32)
        )
    );
    let report = r#"{"agent":"b","piece":3,"reason":"BLAKE3 mismatch","extra":1}"#;
    assert!(serde_json::from_str::<ReportRequest>(report).is_err());
    assert_eq!(serde_json::to_string(&ReportAccepted {}).unwrap(), "{}");
    let id = key().swarm_id();
    assert_eq!(path::swarm_digests(&id), format!("/v1/swarms/{id}/digests"));
}

#[test]
fn holding_json_shape() {
    let text = format!(
        r#"{{"content":"{}","name":"a.iso","layout":{{"size":10,"piece_size":4}},"pieces":"c0"}}"#,
        "ab".repeat(32)
    );
    let holding: Holding = serde_json::from_str(&text).unwrap();
    assert_eq!(holding.layout.piece_count(), 3);
    assert_eq!(serde_json::to_string(&holding).unwrap(), text);
}

#[test]
fn an_agent_address_without_a_scheme_is_plain_http() {
    // An agent from before TLS sends no scheme; a plain agent still sends none, so that such a
    // tracker (which refuses unknown fields) takes its registration.
    let old: RegisterRequest = serde_json::from_str(r#"{"addr":"10.0.0.5:7701"}"#).unwrap();
    assert_eq!(old.scheme, Scheme::Http);
    assert_eq!(
        serde_json::to_string(&old).unwrap(),
        r#"{"addr":"10.0.0.5:7701","upload_capacity":0,"holdings":[]}"#
    );
    let tls = RegisterRequest {
        scheme: Scheme::Https,
        ..old
    };
    let text = serde_json::to_string(&tls).unwrap();
    assert!(text.contains(r#""scheme":"https""#), "{text}");
    assert_eq!(serde_json::from_str::<RegisterRequest>(&text).unwrap(), tls);
    assert_eq!(Scheme::Https.base(tls.addr), "https://10.0.0.5:7701");
    assert!(
        serde_json::from_str::<RegisterRequest>(r#"{"addr":"10.0.0.5:7701","scheme":"ftp"}"#)
            .is_err()
    );
}
