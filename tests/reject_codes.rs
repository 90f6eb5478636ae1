//! Every reason code a strategy can be answered with is one `RejectCode`, and the README's table
//! of reason codes lists exactly those (and the broker's own, `broker.<code>`).

use std::collections::BTreeSet;
use std::path::Path;

use tradegate_actors::domain::RejectCode;

/// The codes in the first column of the README's "Reason codes" table.
fn readme_codes() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split_once("Reason codes:")
        .expect("the README has a table of reason codes")
        .1;
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            first
                .split('/')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_readme_lists_every_reject_code_and_no_other() {
    let mut documented = readme_codes();
    assert!(
        documented.remove("broker.<code>"),
        "the broker's own codes are documented"
    );
    let codes: BTreeSet<String> = RejectCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(documented, codes);
    // each is spelled once and differently
    assert_eq!(codes.len(), RejectCode::ALL.len());
    assert!(
        codes
            .iter()
            .all(|c| !c.starts_with(RejectCode::BROKER_PREFIX))
    );
}
