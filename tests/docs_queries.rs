//! Every SQL statement of `docs/audit-queries.md` runs against a migrated database, so the
//! query guide cannot drift from the schema unnoticed.

mod common;

#[tokio::test]
async fn the_query_guide_runs_against_the_schema() {
    let db = common::TestDb::new().await;
    let client = db.client().await;
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-queries.md"),
    )
    .unwrap();
    let mut statements = Vec::new();
    let mut in_sql = false;
    let mut current = String::new();
    for line in guide.lines() {
        match line.trim() {
            "```sql" => in_sql = true,
            "```" if in_sql => in_sql = false,
            _ if in_sql => {
                current.push_str(line);
                current.push('\n');
                if line.trim_end().ends_with(';') {
                    statements.push(std::mem::take(&mut current));
                }
            }
            _ => {}
        }
    }
    assert!(
        current.trim().is_empty(),
        "a statement without its ';': {current}"
    );
    assert!(statements.len() >= 15, "{} statements", statements.len());
    for sql in &statements {
        if let Err(e) = client.batch_execute(sql).await {
            panic!("{sql}\n{e:?}");
        }
    }
}
