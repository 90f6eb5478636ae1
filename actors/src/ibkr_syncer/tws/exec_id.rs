//! Execution ids: the base a correction keeps, and its revision.

use std::borrow::Cow;

/// How an execution id was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecIdForm {
    /// `a.b.c.RR`: the last segment is the revision (IB: a correction "differs from a previous
    /// ExecId in only the digits after the final period")
    Plain,
    /// `a.b.c.RR.LL`, five segments, the form of combo legs: the fifth tells the legs' fills
    /// apart, the fourth is the revision
    ComboLeg,
    /// Neither: kept whole as its own base, revision 0, never merged with another fill
    Unrecognised,
}

/// An execution id split into the part a correction keeps (`base`) and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecId<'a> {
    /// What every revision of this fill shares
    pub base: Cow<'a, str>,
    /// The revision (0 when the id has none)
    pub revision: i32,
    /// How the id was read
    pub form: ExecIdForm,
}

/// A revision segment as IB writes it: two hexadecimal digits (`01`, `02`, ... `0a`, ...; IB's
/// ids are hexadecimal throughout, so `.0a` follows `.09`).
pub(super) fn revision_of(segment: &str) -> Option<i32> {
    (segment.len() == 2 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| i32::from_str_radix(segment, 16).ok())
        .flatten()
}

/// Splits an execution id (see [`ExecIdForm`]): `0000e0d5.64305db8.01.02` is base
/// `0000e0d5.64305db8.01`, revision 2; the combo leg `0000e0d5.64305db8.01.02.03` is base
/// `0000e0d5.64305db8.01.*.03`, revision 2 (the `*` stands for the revision, so a leg's base
/// can never equal another id's); anything else is its own base with revision 0.
pub fn parse_exec_id(exec_id: &str) -> ExecId<'_> {
    let whole = ExecId {
        base: Cow::Borrowed(exec_id),
        revision: 0,
        form: ExecIdForm::Unrecognised,
    };
    let segments: Vec<&str> = exec_id.split('.').collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return whole;
    }
    if segments.len() == 5 {
        return match revision_of(segments[3]) {
            Some(revision) => ExecId {
                base: Cow::Owned(format!(
                    "{}.{}.{}.*.{}",
                    segments[0], segments[1], segments[2], segments[4]
                )),
                revision,
                form: ExecIdForm::ComboLeg,
            },
            None => whole,
        };
    }
    let (base, last) = exec_id.rsplit_once('.').unwrap_or((exec_id, ""));
    match revision_of(last) {
        Some(revision) => ExecId {
            base: Cow::Borrowed(base),
            revision,
            form: ExecIdForm::Plain,
        },
        None => whole,
    }
}
