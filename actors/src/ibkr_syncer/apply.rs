//! Applying one fetched batch in the sync's transaction (the spec's `sync_trades_once` after
//! the fetch). The caller holds the account's lock. In order:
//! 1. repeats within the batch are collapsed (the last one wins);
//! 2. the stored fills of the batch's bases are read, and the batch split into new fills and
//!    stored ones; stored ones are staged and compared, and those received exactly as stored
//!    are dropped, so a re-sync of the same window writes nothing;
//! 3. canonical flags are settled (the highest revision of each base): stored canonical fills a
//!    higher revision supersedes are demoted first (the unique index allows one canonical fill
//!    per base at any moment);
//! 4. the parents of new and changed fills are resolved by perm id, order ref or the composite
//!    key, and missing ones created with the aggregates of their new canonical fills;
//! 5. new fills are written with one `COPY` (ids reserved, parents and flags decided here),
//!    changed ones updated in place (identity is `(account_id, exec_id)`);
//! 6. every other touched parent's aggregates (and a new one's that a stored fill moved into)
//!    are recomputed from its canonical fills in the database;
//! 7. the ingestion run's records are added for what was created or updated.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::matching::{self, AccountKey, NewParent, Positioned};
use crate::domain::{NewFill, ParentKey, SyncCounts};
use crate::store::StoreError;
use crate::store::broker_sync::{
    self, CompositeKey, FillRow, IdSequence, RunRecordRow, StoredFill, TradeRow,
};

/// Applies one fetched batch in `tx` (see the module docs); `ingestion_run` is the surrogate id
/// of the run whose records list what was created and updated. The caller sets
/// `fetched_executions_count`.
pub async fn apply_fills(
    tx: &tokio_postgres::Transaction<'_>,
    fills: &[NewFill],
    fetched_at: DateTime<Utc>,
    ingestion_run: Option<i64>,
) -> Result<SyncCounts, StoreError> {
    let mut counts = SyncCounts::default();
    if fills.is_empty() {
        return Ok(counts);
    }
    broker_sync::prepare_batch(tx).await?;

    // 1., 2.
    let batch = matching::collapse(fills);
    let mut bases = HashSet::with_capacity(batch.len());
    let (accounts, base_ids): (Vec<&str>, Vec<&str>) = batch
        .iter()
        .map(|(_, f)| (f.account_id.as_str(), f.exec_id_base.as_str()))
        .filter(|pair| bases.insert(*pair))
        .unzip();
    let stored = broker_sync::stored_fills_of_bases(tx, &accounts, &base_ids).await?;
    let split = matching::split(&batch, &stored);
    let stored_count = split.stored.len();
    let changed: Vec<(Positioned<'_>, &StoredFill)> = if split.stored.is_empty() {
        Vec::new()
    } else {
        let staged: Vec<Positioned<'_>> = split.stored.iter().map(|(p, _)| *p).collect();
        broker_sync::stage_stored(tx, &staged).await?;
        let differ: HashSet<i32> = broker_sync::changed_staged(tx).await?.into_iter().collect();
        split
            .stored
            .into_iter()
            .filter(|((ord, _), _)| differ.contains(ord))
            .collect()
    };
    counts.unchanged_executions_count = (stored_count - changed.len()) as u64;
    let new = split.new;
    if new.is_empty() && changed.is_empty() {
        return Ok(counts);
    }

    // 3.
    let canonical = matching::canonical(&new, &stored);
    let mut touched = if canonical.demote.is_empty() {
        Vec::new()
    } else {
        broker_sync::demote_fills(tx, &canonical.demote).await?
    };
    let demoted = touched.len() as u64;

    // 4.
    let needs: Vec<(Positioned<'_>, AccountKey, bool)> = new
        .iter()
        .zip(&canonical.new)
        .map(|(p, c)| (*p, matching::account_key(p.1), *c))
        .chain(
            changed
                .iter()
                .map(|(p, _)| (*p, matching::account_key(p.1), false)),
        )
        .collect();
    let mut parents = find_parents(tx, needs.iter().map(|(_, key, _)| key)).await?;
    let to_create = matching::new_parents(&needs, &parents);
    let created_ids = create_parents(tx, &to_create, fetched_at).await?;
    for (p, id) in to_create.iter().zip(&created_ids) {
        parents.insert(p.key.clone(), *id);
    }
    counts.created_trades_count = created_ids.len() as u64;

    // 5.
    let fill_ids = broker_sync::reserve_ids(tx, IdSequence::Fills, new.len()).await?;
    let rows: Vec<FillRow<'_>> = needs[..new.len()]
        .iter()
        .zip(&fill_ids)
        .map(|(((_, fill), key, is_canonical), id)| FillRow {
            id: *id,
            trade_id: parents[key],
            is_canonical: *is_canonical,
            fill,
        })
        .collect();
    if !rows.is_empty() {
        broker_sync::copy_fills(tx, &rows, fetched_at).await?;
    }
    counts.inserted_executions_count = rows.len() as u64;
    counts.canonical_changes_count =
        demoted + rows.iter().filter(|r| !r.is_canonical).count() as u64;
    touched.extend(rows.iter().map(|r| r.trade_id));

    // the parents changed fills now belong to, in the order of `changed`
    let changed_parents: Vec<i64> = needs[new.len()..]
        .iter()
        .map(|(_, key, _)| parents[key])
        .collect();
    if !changed.is_empty() {
        let ords: Vec<i32> = changed.iter().map(|((ord, _), _)| *ord).collect();
        counts.updated_executions_count = broker_sync::update_changed_fills(
            tx,
            &ords,
            &changed_parents,
            fetched_at,
            ingestion_run,
        )
        .await?;
        touched.extend(changed_parents.iter().copied());
        touched.extend(changed.iter().map(|(_, s)| s.trade_id));
    }
    let moved_into: HashSet<i64> = changed_parents.into_iter().collect();
    touched.extend(created_ids.iter().copied());
    touched.sort_unstable();
    touched.dedup();
    counts.touched_trades_count = touched.len() as u64;

    // 6. parents created above hold their aggregates, unless a stored fill moved in or they
    // did not fit exact decimals here
    let complete: HashMap<i64, &NewParent<'_>> = created_ids
        .iter()
        .copied()
        .zip(&to_create)
        .filter(|(id, p)| p.aggregates.is_some() && !moved_into.contains(id))
        .collect();
    let recompute: Vec<i64> = touched
        .iter()
        .copied()
        .filter(|id| !complete.contains_key(id))
        .collect();
    broker_sync::recompute_trades(tx, &recompute, fetched_at).await?;

    // 7.
    if let Some(run) = ingestion_run {
        let fills = rows.iter().map(|r| RunRecordRow {
            record_type: "broker_fill",
            record_id: r.id,
            symbol: &r.fill.symbol,
            occurred_at: Some(r.fill.executed_at),
        });
        let trades = created_ids.iter().filter_map(|id| {
            let p = complete.get(id)?;
            Some(RunRecordRow {
                record_type: "broker_trade",
                record_id: *id,
                symbol: &p.first.1.symbol,
                occurred_at: p.aggregates.as_ref().and_then(|a| a.last_executed_at),
            })
        });
        let records: Vec<RunRecordRow<'_>> = fills.chain(trades).collect();
        if !records.is_empty() {
            broker_sync::copy_run_records(tx, run, &records).await?;
        }
        broker_sync::record_trades(tx, run, &recompute, &created_ids).await?;
    }
    Ok(counts)
}

/// The stored parents of `keys`, by the kind of each key.
async fn find_parents<'k>(
    tx: &tokio_postgres::Transaction<'_>,
    keys: impl Iterator<Item = &'k AccountKey>,
) -> Result<HashMap<AccountKey, i64>, StoreError> {
    let mut perm: HashSet<(&str, i64)> = HashSet::new();
    let mut refs: HashSet<(&str, &str)> = HashSet::new();
    let mut composite: HashMap<CompositeKey, &AccountKey> = HashMap::new();
    for key in keys {
        let (account, parent) = key;
        match parent {
            ParentKey::PermId(id) => {
                perm.insert((account, *id));
            }
            ParentKey::OrderRef(r) => {
                refs.insert((account, r));
            }
            ParentKey::Composite {
                client_id,
                order_id,
                symbol,
                side,
                trade_date,
            } => {
                composite.insert(
                    (
                        account.clone(),
                        *client_id,
                        *order_id,
                        symbol.clone(),
                        side.as_str().to_string(),
                        *trade_date,
                    ),
                    key,
                );
            }
        }
    }
    let mut found = HashMap::new();
    if !perm.is_empty() {
        let (accounts, ids): (Vec<&str>, Vec<i64>) = perm.into_iter().unzip();
        for (account, id, trade) in broker_sync::parents_by_perm_id(tx, &accounts, &ids).await? {
            found.insert((account, ParentKey::PermId(id)), trade);
        }
    }
    if !refs.is_empty() {
        let (accounts, names): (Vec<&str>, Vec<&str>) = refs.into_iter().unzip();
        for (account, name, trade) in
            broker_sync::parents_by_order_ref(tx, &accounts, &names).await?
        {
            found.insert((account, ParentKey::OrderRef(name)), trade);
        }
    }
    if !composite.is_empty() {
        let wanted: Vec<CompositeKey> = composite.keys().cloned().collect();
        for (k, trade) in broker_sync::parents_by_composite(tx, &wanted).await? {
            if let Some(key) = composite.get(&k) {
                found.insert((*key).clone(), trade);
            }
        }
    }
    Ok(found)
}

/// Creates `parents` with one `COPY` (ids reserved first) and returns their ids, in order.
async fn create_parents(
    tx: &tokio_postgres::Transaction<'_>,
    parents: &[NewParent<'_>],
    fetched_at: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let ids = broker_sync::reserve_ids(tx, IdSequence::Trades, parents.len()).await?;
    let rows: Vec<TradeRow<'_>> = parents
        .iter()
        .zip(&ids)
        .map(|(p, id)| {
            let first = p.first.1;
            let (ib_perm_id, order_ref) = match &p.key.1 {
                ParentKey::PermId(perm) => (Some(*perm), first.order_ref.as_deref()),
                ParentKey::OrderRef(r) => (None, Some(r.as_str())),
                ParentKey::Composite { .. } => (None, None),
            };
            TradeRow {
                id: *id,
                first,
                ib_perm_id,
                order_ref,
                trade_date: matching::trade_date(&p.key.1, first, p.aggregates.as_ref()),
                aggregates: p.aggregates.as_ref(),
            }
        })
        .collect();
    broker_sync::copy_trades(tx, &rows, fetched_at).await?;
    Ok(ids)
}
