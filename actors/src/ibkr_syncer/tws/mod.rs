//! The TWS socket protocol, text form (server versions up to 200), for what executions sync
//! needs. Written by hand because the `ibapi` crate speaks only the protobuf protocol (server
//! versions 213+) and hands prices over as `f64` (DESIGN section 7).
//!
//! Wire format: after the handshake every message is a 4-byte big-endian length and a payload of
//! NUL-terminated text fields, the first being the message id. Fields are parsed straight into
//! exact types; every malformed frame is an error, never a panic.

mod exec_id;
mod fields;
mod framing;
mod wire;

pub use exec_id::{ExecId, ExecIdForm, parse_exec_id};
pub use fields::{Fields, TwsTime, decode_text, parse_decimal};
pub use framing::{
    FrameReader, client_hello, encode_fields, parse_version_range, read_frame, write_fields,
};
pub use wire::{
    CommissionReport, Contract, Execution, Incoming, Position, commission_fields, decode,
    execution_fields, position_fields,
};

/// Lowest server version tradegate accepts (the range `ib_async` advertises starts here too).
pub const MIN_VERSION: u32 = 157;
/// Highest server version tradegate advertises: below 201, so the server keeps the text protocol.
pub const MAX_VERSION: u32 = 178;
/// Largest frame accepted; TWS messages are far smaller, so a larger length is a broken stream.
pub const MAX_FRAME: usize = 1 << 20;
/// From this server version an execution carries `pendingPriceRevision`.
const VERSION_PENDING_PRICE_REVISION: u32 = 178;

/// Outgoing message ids.
pub mod out {
    /// REQ_EXECUTIONS
    pub const REQ_EXECUTIONS: u32 = 7;
    /// REQ_POSITIONS
    pub const REQ_POSITIONS: u32 = 61;
    /// CANCEL_POSITIONS
    pub const CANCEL_POSITIONS: u32 = 64;
    /// START_API
    pub const START_API: u32 = 71;
}

/// Incoming message ids.
pub mod inc {
    /// ERR_MSG
    pub const ERROR: u32 = 4;
    /// NEXT_VALID_ID
    pub const NEXT_VALID_ID: u32 = 9;
    /// EXECUTION_DATA
    pub const EXECUTION_DATA: u32 = 11;
    /// MANAGED_ACCTS
    pub const MANAGED_ACCOUNTS: u32 = 15;
    /// EXECUTION_DATA_END
    pub const EXECUTION_DATA_END: u32 = 55;
    /// COMMISSION_REPORT
    pub const COMMISSION_REPORT: u32 = 59;
    /// POSITION_DATA
    pub const POSITION_DATA: u32 = 61;
    /// POSITION_END
    pub const POSITION_END: u32 = 62;
}

/// TWS's answer when another session uses the client id already.
pub const CLIENT_ID_IN_USE: i64 = 326;

/// A protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum TwsError {
    /// The socket failed or closed
    #[error("TWS connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that cannot be what the protocol says
    #[error("malformed TWS message: {0}")]
    Malformed(String),
    /// The server speaks a version outside the advertised range
    #[error("TWS server version {0} is outside {MIN_VERSION}..={MAX_VERSION}")]
    Version(u32),
    /// TWS answered with an error message (ERR_MSG) that ends the session or the request
    #[error("TWS refused {what}: error {code}: {message}")]
    Refused {
        /// What was refused (the session, the executions request)
        what: &'static str,
        /// TWS's error code
        code: i64,
        /// Its text
        message: String,
    },
    /// TWS did not finish answering within the request's deadline
    #[error("TWS did not finish {what} within {limit:?}")]
    Deadline {
        /// What was asked
        what: &'static str,
        /// The deadline
        limit: std::time::Duration,
    },
}

impl TwsError {
    /// Whether TWS refused the session because another uses its client id (a configuration
    /// error: retrying cannot help while the other session lives).
    pub fn client_id_in_use(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if *code == CLIENT_ID_IN_USE)
    }
}

fn malformed(message: impl Into<String>) -> TwsError {
    TwsError::Malformed(message.into())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use rust_decimal::Decimal;
    use tokio::io::AsyncWriteExt;

    /// A frame TWS really sent (server version below 178, so no pendingPriceRevision).
    const CAPTURED: &[u8] = b"11\x00-1\x0010003\x00265598\x00AAPL\x00STK\x00\x000.0\x00\x00\x00ISLAND\x00USD\x00AAPL\x00NMS\x000000e0d5.63cefb1e.01.01\x0020221017  16:49:50\x00DU3479983\x00ISLAND\x00SLD\x003\x00142.46\x001481406469\x00999\x000\x003\x00142.46\x00\x00\x00\x00\x002\x00";

    #[test]
    fn a_captured_execution_decodes_into_exact_values() {
        let Incoming::Execution(e) = decode(CAPTURED, 176).unwrap() else {
            panic!("not an execution");
        };
        assert_eq!(e.req_id, -1);
        assert_eq!(e.order_id, 10003);
        assert_eq!(e.contract.symbol, "AAPL");
        assert_eq!(e.contract.strike, Some(Decimal::ZERO));
        assert_eq!(e.exec_id, "0000e0d5.63cefb1e.01.01");
        assert_eq!(e.time.local.to_string(), "2022-10-17 16:49:50");
        assert_eq!(e.time.zone, None);
        assert_eq!(e.account, "DU3479983");
        assert_eq!(e.side, "SLD");
        assert_eq!(e.shares, Decimal::new(3, 0));
        assert_eq!(e.price, Decimal::new(14246, 2));
        assert_eq!(e.perm_id, 1_481_406_469);
        assert_eq!(e.client_id, 999);
        assert_eq!(e.avg_price, Decimal::new(14246, 2));
        assert_eq!(e.order_ref, "");
        assert_eq!(e.ev_multiplier, None);
        assert_eq!(e.last_liquidity, 2);
        assert!(!e.pending_price_revision);
        // written back the way a server of the same version writes it, it decodes the same
        let again = encode_fields(&execution_fields(&e, 176));
        assert_eq!(&again[4..], CAPTURED);
        let Incoming::Execution(e178) =
            decode(&encode_fields(&execution_fields(&e, 178))[4..], 178).unwrap()
        else {
            panic!()
        };
        assert_eq!(e178, e);
    }

    /// A position as ib_async's decoder unpacks it: sixteen fields, the average cost last.
    #[test]
    fn positions_decode_exactly_and_round_trip() {
        let frame = encode_fields(&[
            "61", "3", "DU1", "265598", "AAPL", "STK", "", "0.0", "", "", "NASDAQ", "USD", "AAPL",
            "NMS", "-12.5", "185.1234",
        ]);
        let Incoming::Position(p) = decode(&frame[4..], 176).unwrap() else {
            panic!("not a position")
        };
        assert_eq!(p.account, "DU1");
        assert_eq!(p.contract.con_id, 265_598);
        assert_eq!(p.contract.symbol, "AAPL");
        assert_eq!(p.contract.trading_class, "NMS");
        assert_eq!(p.position, Decimal::new(-125, 1));
        assert_eq!(p.avg_cost, Some(Decimal::new(1_851_234, 4)));
        let again = encode_fields(&position_fields(&p));
        assert_eq!(decode(&again[4..], 176).unwrap(), Incoming::Position(p));
        for (i, bad) in [(1, "2"), (14, ""), (14, "1e400x"), (4, "")] {
            let mut fields: Vec<String> = position_fields(&Position {
                account: "DU1".into(),
                contract: Contract {
                    symbol: "AAPL".into(),
                    ..Contract::default()
                },
                position: Decimal::ONE,
                avg_cost: None,
            });
            fields[i] = bad.into();
            assert!(
                decode(&encode_fields(&fields)[4..], 176).is_err(),
                "field {i} = {bad:?}"
            );
        }
    }

    #[test]
    fn times_with_and_without_a_zone_name() {
        let plain = TwsTime::parse("20221017  16:49:50").unwrap();
        assert_eq!(plain.zone, None);
        let zoned = TwsTime::parse("20240102 09:30:01 US/Eastern").unwrap();
        assert_eq!(zoned.zone.as_deref(), Some("US/Eastern"));
        assert_eq!(zoned.local.to_string(), "2024-01-02 09:30:01");
        let dashed = TwsTime::parse("20240102-09:30:01").unwrap();
        assert_eq!(dashed.local, zoned.local);
        assert!(dashed.utc && dashed.zone.is_none(), "{dashed:?}");
        assert!(!plain.utc && !zoned.utc);
        for bad in [
            "",
            "2024",
            "20241399 10:00:00",
            "20240102 25:00:00",
            "ééééééééé",
        ] {
            assert!(TwsTime::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commission_unset_is_none_not_a_huge_number() {
        let unset = CommissionReport {
            exec_id: "0001.01".into(),
            commission: None,
            currency: "USD".into(),
            realized_pnl: None,
        };
        let frame = encode_fields(&commission_fields(&unset));
        assert!(
            String::from_utf8_lossy(&frame).contains("1.7976931348623157E308"),
            "unset is written as TWS writes it"
        );
        let Incoming::Commission(c) = decode(&frame[4..], 176).unwrap() else {
            panic!()
        };
        assert_eq!(c.commission, None);
        assert_eq!(c.realized_pnl, None);
        let frame = encode_fields(&["59", "1", "0001.01", "1.0425", "USD", "-3.5", "", ""]);
        let Incoming::Commission(c) = decode(&frame[4..], 176).unwrap() else {
            panic!()
        };
        assert_eq!(c.commission, Some(Decimal::new(10425, 4)));
        assert_eq!(c.realized_pnl, Some(Decimal::new(-35, 1)));
    }

    #[test]
    fn the_small_messages_decode() {
        let d = |fields: &[&str]| decode(&encode_fields(fields)[4..], 176).unwrap();
        assert_eq!(d(&["9", "1", "42"]), Incoming::NextValidId(42));
        assert_eq!(
            d(&["15", "1", "DU1,DU2,"]),
            Incoming::ManagedAccounts(vec!["DU1".into(), "DU2".into()])
        );
        assert_eq!(
            d(&["55", "1", "7"]),
            Incoming::ExecutionDataEnd { req_id: 7 }
        );
        assert_eq!(
            d(&[
                "4",
                "2",
                "-1",
                "2104",
                "Market data farm connection is OK:usfarm",
                ""
            ]),
            Incoming::Error {
                id: -1,
                code: 2104,
                message: "Market data farm connection is OK:usfarm".into()
            }
        );
        assert_eq!(d(&["62", "1"]), Incoming::PositionEnd);
        assert_eq!(d(&["53", "1"]), Incoming::Other(53));
        assert!(
            decode(&encode_fields(&["61", "3"])[4..], 176).is_err(),
            "cut short"
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad: [&[u8]; 6] = [
            b"",
            b"11",
            b"abc\0",
            b"9\x001\x00x\x00",
            b"11\0-1\0",
            b"\xff\xfe\0",
        ];
        for frame in bad {
            assert!(decode(frame, 176).is_err(), "{frame:?}");
        }
        // an execution missing its price
        let mut fields: Vec<&str> = CAPTURED[..CAPTURED.len() - 1]
            .split(|b| *b == 0)
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect();
        fields[20] = "";
        let err = decode(&encode_fields(&fields)[4..], 176).unwrap_err();
        assert!(err.to_string().contains("price"), "{err}");
        fields[20] = "1,5";
        assert!(decode(&encode_fields(&fields)[4..], 176).is_err());
    }

    fn split(id: &str) -> (String, i32, ExecIdForm) {
        let e = parse_exec_id(id);
        (e.base.into_owned(), e.revision, e.form)
    }

    #[test]
    fn exec_ids_split_into_base_and_revision_as_ib_writes_them() {
        use ExecIdForm::*;
        let plain = |base: &str, revision| (base.to_string(), revision, Plain);
        let whole = |id: &str| (id.to_string(), 0, Unrecognised);
        assert_eq!(
            split("0000e0d5.64305db8.01.01"),
            plain("0000e0d5.64305db8.01", 1)
        );
        assert_eq!(
            split("0000e0d5.64305db8.01.02"),
            plain("0000e0d5.64305db8.01", 2)
        );
        // hexadecimal, as the rest of the id: .0a corrects .09, it is not a fill of its own
        assert_eq!(
            split("0000e0d5.64305db8.01.0a"),
            plain("0000e0d5.64305db8.01", 10)
        );
        // a combo leg: the fifth segment is the leg, the fourth the revision
        let leg1 = split("0000e0d5.64305db8.01.01.01");
        let leg2 = split("0000e0d5.64305db8.01.01.02");
        let leg2_fixed = split("0000e0d5.64305db8.01.02.02");
        assert_eq!(leg1, ("0000e0d5.64305db8.01.*.01".to_string(), 1, ComboLeg));
        assert_ne!(leg1.0, leg2.0, "two legs are two fills");
        assert_eq!((leg2_fixed.0.as_str(), leg2_fixed.1), (leg2.0.as_str(), 2));
        for odd in [
            "noperiod",
            "abc.def",
            "abc.",
            ".01",
            "a.99999999999",
            "a.1",
            "a..01",
            "0000e0d5.64305db8.01.zz",
            "0000e0d5.64305db8.01.zz.01",
        ] {
            assert_eq!(split(odd), whole(odd), "{odd}");
        }
    }

    #[test]
    fn version_ranges() {
        assert_eq!(parse_version_range("v157..178").unwrap(), (157, 178));
        assert_eq!(parse_version_range("v100").unwrap(), (100, 100));
        for bad in ["157..178", "v178..157", "vx..1", ""] {
            assert!(parse_version_range(bad).is_err(), "{bad}");
        }
        let hello = client_hello();
        assert!(hello.starts_with(b"API\0"));
        assert_eq!(&hello[8..], b"v157..178");
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused() {
        let mut wire = Vec::new();
        write_fields(&mut wire, &["9", "1", "5"]).await.unwrap();
        write_fields(&mut wire, &["55", "1", "2"]).await.unwrap();
        let mut reader = wire.as_slice();
        let first = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode(&first, 176).unwrap(), Incoming::NextValidId(5));
        let second = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            decode(&second, 176).unwrap(),
            Incoming::ExecutionDataEnd { req_id: 2 }
        );
        assert!(
            read_frame(&mut reader).await.unwrap().is_none(),
            "clean end"
        );
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(read_frame(&mut huge.as_slice()).await.is_err());
        // a frame cut short is an error, not a clean end
        let mut cut = &wire[..6];
        assert!(read_frame(&mut cut).await.is_err());
        for reader in [FrameReader::new(&wire[..6]), FrameReader::new(&huge[..])] {
            let mut reader = reader;
            assert!(reader.next_frame().await.is_err());
        }
    }

    /// A frame that arrives in pieces, with the read cancelled by a timeout between them (as a
    /// grace read after the end marker does), is read whole afterwards: nothing is lost and the
    /// stream stays in step.
    #[tokio::test]
    async fn a_read_cancelled_mid_frame_loses_nothing() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(client);
        let frame = encode_fields(&["59", "1", "0001.01", "1.5", "USD", "", "", ""]);
        server.write_all(&frame[..7]).await.unwrap();
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_frame()).await;
        assert!(cut.is_err(), "no whole frame yet: the read is cancelled");
        server.write_all(&frame[7..]).await.unwrap();
        write_fields(&mut server, &["55", "1", "2"]).await.unwrap();
        let Incoming::Commission(c) =
            decode(&reader.next_frame().await.unwrap().unwrap(), 176).unwrap()
        else {
            panic!("the commission report, whole")
        };
        assert_eq!(c.commission, Some(Decimal::new(15, 1)));
        assert_eq!(
            decode(&reader.next_frame().await.unwrap().unwrap(), 176).unwrap(),
            Incoming::ExecutionDataEnd { req_id: 2 }
        );
        drop(server);
        assert!(reader.next_frame().await.unwrap().is_none(), "clean end");
    }

    /// The handshake of a TWS with a Chinese locale: the connection time's zone in GB2312
    /// (rust-ibapi#352). The frame decodes; the zone reads as the Chinese text it is.
    #[test]
    fn gb2312_text_decodes_and_never_fails_its_frame() {
        let mut hello = b"176\x0020240102 10:00:00 ".to_vec();
        hello.extend_from_slice(&[
            0xd6, 0xd0, 0xb9, 0xfa, 0xb1, 0xea, 0xd7, 0xbc, 0xca, 0xb1, 0xbc, 0xe4,
        ]);
        hello.push(0);
        let mut f = Fields::parse(&hello).unwrap();
        assert_eq!(f.int::<u32>("version").unwrap(), 176);
        assert_eq!(f.string("time").unwrap(), "20240102 10:00:00 中国标准时间");
        // bytes that are neither UTF-8 nor GB18030 become U+FFFD, never an error
        assert_eq!(decode_text(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(decode_text("déjà".as_bytes()), "déjà");
    }

    proptest! {
        #[test]
        fn no_frame_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 176);
            let _ = decode(&bytes, 178);
        }

        #[test]
        fn no_field_list_makes_the_decoder_panic(
            id in prop_oneof![Just("4"), Just("9"), Just("11"), Just("15"), Just("55"), Just("59"), Just("61"), Just("62")],
            fields in proptest::collection::vec("[0-9A-Za-z.:, -]{0,12}", 0..40),
        ) {
            let mut all = vec![id.to_string()];
            all.extend(fields);
            let frame = encode_fields(&all);
            let _ = decode(&frame[4..], 178);
        }
    }
}
