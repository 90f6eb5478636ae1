//! The decisions of applying a fetched batch that need no database: repeats collapsed, which
//! fills are new, which revision of each base is canonical, which parent each fill belongs to,
//! and a new parent's attributes and aggregates. Deciding here, from the stored state read in a
//! few narrow queries, lets new rows go straight into their tables with one `COPY` each instead
//! of through a wide staging table written twice.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::domain::{NewFill, ParentKey, TradeStatus};
use crate::store::broker_sync::{StoredFill, TradeAggregates};

/// A fill of the batch with its position in fetch order.
pub type Positioned<'a> = (i32, &'a NewFill);

/// The batch without repeats: of fills sharing `(account_id, exec_id)` the last one fetched
/// wins and keeps its own position; the rest keep fetch order.
pub fn collapse(fills: &[NewFill]) -> Vec<Positioned<'_>> {
    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(fills.len());
    for (i, f) in fills.iter().enumerate() {
        last.insert((f.account_id.as_str(), f.exec_id.as_str()), i);
    }
    fills
        .iter()
        .enumerate()
        .filter(|(i, f)| last[&(f.account_id.as_str(), f.exec_id.as_str())] == *i)
        .map(|(i, f)| (i32::try_from(i).unwrap_or(i32::MAX), f))
        .collect()
}

/// The batch split by whether its exec id is stored already.
#[derive(Debug, Default)]
pub struct Split<'a> {
    /// Fills not stored yet
    pub new: Vec<Positioned<'a>>,
    /// Fills stored already, with the stored row
    pub stored: Vec<(Positioned<'a>, &'a StoredFill)>,
}

/// Splits `batch` against the stored fills of its bases.
pub fn split<'a>(batch: &[Positioned<'a>], stored: &'a [StoredFill]) -> Split<'a> {
    let by_exec: HashMap<(&str, &str), &StoredFill> = stored
        .iter()
        .map(|s| ((s.account_id.as_str(), s.exec_id.as_str()), s))
        .collect();
    let mut out = Split::default();
    for &(ord, f) in batch {
        match by_exec.get(&(f.account_id.as_str(), f.exec_id.as_str())) {
            Some(s) => out.stored.push(((ord, f), s)),
            None => out.new.push((ord, f)),
        }
    }
    out
}

/// Which revision of each base is canonical once the new fills are in.
#[derive(Debug, Default)]
pub struct Canonical {
    /// Stored canonical fills a higher revision supersedes (ids), to demote first
    pub demote: Vec<i64>,
    /// For each new fill, in order, whether it is canonical: the highest revision of its base
    /// among stored and new fills
    pub new: Vec<bool>,
}

/// Settles the canonical flags: one canonical fill per `(account, base)`, the highest revision.
pub fn canonical(new: &[Positioned<'_>], stored: &[StoredFill]) -> Canonical {
    let mut top: HashMap<(&str, &str), i32> = HashMap::with_capacity(new.len() + stored.len());
    let revisions = stored
        .iter()
        .map(|s| {
            (
                s.account_id.as_str(),
                s.exec_id_base.as_str(),
                s.exec_revision,
            )
        })
        .chain(new.iter().map(|(_, f)| {
            (
                f.account_id.as_str(),
                f.exec_id_base.as_str(),
                f.exec_revision,
            )
        }));
    for (account, base, revision) in revisions {
        let max = top.entry((account, base)).or_insert(revision);
        *max = (*max).max(revision);
    }
    let top_of = |account: &str, base: &str| top.get(&(account, base)).copied();
    Canonical {
        demote: stored
            .iter()
            .filter(|s| {
                s.is_canonical
                    && top_of(&s.account_id, &s.exec_id_base).is_some_and(|m| s.exec_revision < m)
            })
            .map(|s| s.id)
            .collect(),
        new: new
            .iter()
            .map(|(_, f)| top_of(&f.account_id, &f.exec_id_base) == Some(f.exec_revision))
            .collect(),
    }
}

/// A parent's identity: the account and the spec's resolution key.
pub type AccountKey = (String, ParentKey);

/// The account and parent key of a fill.
pub fn account_key(fill: &NewFill) -> AccountKey {
    (fill.account_id.clone(), ParentKey::resolve(fill))
}

/// A parent trade to create.
#[derive(Debug, Clone)]
pub struct NewParent<'a> {
    /// Its identity
    pub key: AccountKey,
    /// Its attributes come from this fill, the key's earliest
    pub first: Positioned<'a>,
    /// Its aggregates over the key's new canonical fills; `None` when they do not fit exact
    /// decimals here (the database recomputes them)
    pub aggregates: Option<TradeAggregates>,
}

/// The parents to create: one per key in `fills` that `found` lacks, in the order of each
/// key's first fill. Each takes its attributes from the key's earliest fill (execution time,
/// then fetch order) and its aggregates from the key's fills whose `canonical` flag is set.
pub fn new_parents<'a>(
    fills: &[(Positioned<'a>, AccountKey, bool)],
    found: &HashMap<AccountKey, i64>,
) -> Vec<NewParent<'a>> {
    let mut order: Vec<&AccountKey> = Vec::new();
    let mut groups: HashMap<&AccountKey, (Positioned<'a>, Vec<&'a NewFill>)> = HashMap::new();
    for ((ord, f), key, canonical) in fills {
        if found.contains_key(key) {
            continue;
        }
        let entry = groups.entry(key).or_insert_with(|| {
            order.push(key);
            ((*ord, *f), Vec::new())
        });
        let (first_ord, first) = entry.0;
        if (f.executed_at, *ord) < (first.executed_at, first_ord) {
            entry.0 = (*ord, *f);
        }
        if *canonical {
            entry.1.push(f);
        }
    }
    order
        .into_iter()
        .map(|key| {
            let (first, members) = &groups[key];
            NewParent {
                key: key.clone(),
                first: *first,
                aggregates: aggregate(members),
            }
        })
        .collect()
}

/// A trade's aggregates over its canonical fills, as the database computes them: total
/// quantity, average price rounded half away from zero to 8 places, commission (none when no
/// fill has one), first and last execution, and the status. `None` when a sum overflows.
pub fn aggregate(fills: &[&NewFill]) -> Option<TradeAggregates> {
    let mut qty = Decimal::ZERO;
    let mut notional = Decimal::ZERO;
    let mut commission: Option<Decimal> = None;
    let mut max_cum: Option<Decimal> = None;
    let mut first_at: Option<DateTime<Utc>> = None;
    let mut last_at: Option<DateTime<Utc>> = None;
    for f in fills {
        qty = qty.checked_add(f.quantity)?;
        notional = notional.checked_add(f.quantity.checked_mul(f.price)?)?;
        if let Some(c) = f.commission {
            commission = Some(commission.unwrap_or(Decimal::ZERO).checked_add(c)?);
        }
        max_cum = Some(max_cum.map_or(f.cum_quantity, |m| m.max(f.cum_quantity)));
        first_at = Some(first_at.map_or(f.executed_at, |t| t.min(f.executed_at)));
        last_at = Some(last_at.map_or(f.executed_at, |t| t.max(f.executed_at)));
    }
    let avg_price = if qty.is_zero() {
        None
    } else {
        Some(
            notional
                .checked_div(qty)?
                .round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero),
        )
    };
    let status = if qty.is_zero() {
        TradeStatus::Unknown
    } else if max_cum.is_some_and(|m| m > qty) {
        TradeStatus::Partial
    } else {
        TradeStatus::Filled
    };
    Some(TradeAggregates {
        total_quantity: qty,
        avg_price,
        total_commission: commission,
        first_executed_at: first_at,
        last_executed_at: last_at,
        status,
    })
}

/// A new parent's trade date: a composite key's own date (it is identity), else its first
/// canonical execution's UTC date, else its earliest fill's.
pub fn trade_date(
    key: &ParentKey,
    first: &NewFill,
    aggregates: Option<&TradeAggregates>,
) -> NaiveDate {
    match key {
        ParentKey::Composite { trade_date, .. } => *trade_date,
        _ => aggregates
            .and_then(|a| a.first_executed_at)
            .unwrap_or(first.executed_at)
            .date_naive(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::value::RawValue;

    use super::*;
    use crate::domain::Side;

    fn fill(exec_id: &str, perm_id: i64, qty: i64, price: Decimal, minute: u32) -> NewFill {
        let parsed = crate::ibkr_syncer::tws::parse_exec_id(exec_id);
        let (base, revision) = (parsed.base.into_owned(), parsed.revision);
        NewFill {
            account_id: "DU1".into(),
            exec_id: exec_id.into(),
            exec_id_base: base,
            exec_revision: revision,
            perm_id,
            order_id: 5,
            order_ref: None,
            client_id: 1,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            side: Side::Buy,
            exchange: "ISLAND".into(),
            currency: "USD".into(),
            liquidity: None,
            executed_at: Utc.with_ymd_and_hms(2026, 3, 2, 15, minute, 0).unwrap(),
            quantity: Decimal::from(qty),
            price,
            cum_quantity: Decimal::from(qty),
            avg_price: price,
            commission: None,
            commission_currency: None,
            realized_pnl: None,
            raw: RawValue::from_string("{}".into()).unwrap(),
        }
    }

    fn stored(id: i64, exec_id: &str, canonical: bool) -> StoredFill {
        let parsed = crate::ibkr_syncer::tws::parse_exec_id(exec_id);
        let (base, revision) = (parsed.base.into_owned(), parsed.revision);
        StoredFill {
            id,
            account_id: "DU1".into(),
            exec_id: exec_id.into(),
            exec_id_base: base,
            exec_revision: revision,
            is_canonical: canonical,
            trade_id: 100 + id,
        }
    }

    #[test]
    fn the_last_of_a_repeated_exec_id_wins_at_its_own_position() {
        let mut again = fill("a.01", 1, 10, Decimal::ONE, 0);
        again.quantity = Decimal::from(11);
        let fills = vec![
            fill("a.01", 1, 10, Decimal::ONE, 0),
            fill("b.01", 1, 5, Decimal::ONE, 1),
            again,
        ];
        let batch = collapse(&fills);
        let seen: Vec<(i32, &str, Decimal)> = batch
            .iter()
            .map(|(ord, f)| (*ord, f.exec_id.as_str(), f.quantity))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "b.01", Decimal::from(5)),
                (2, "a.01", Decimal::from(11))
            ]
        );
    }

    #[test]
    fn the_highest_revision_of_a_base_is_canonical_wherever_it_is() {
        let fills = vec![
            fill("a.02", 1, 10, Decimal::ONE, 0),
            fill("b.01", 1, 10, Decimal::ONE, 0),
            fill("b.02", 1, 10, Decimal::ONE, 0),
            fill("c.02", 1, 10, Decimal::ONE, 0),
        ];
        let stored = vec![
            stored(1, "a.01", true),
            stored(2, "c.01", false),
            stored(3, "c.03", true),
        ];
        let batch = collapse(&fills);
        let s = split(&batch, &stored);
        assert_eq!(s.new.len(), 4);
        let c = canonical(&s.new, &stored);
        // a stored .01 gives way to a new .02; of new .01 and .02 only .02 counts; a new .02
        // under a stored .03 arrives superseded and demotes nothing
        assert_eq!(c.demote, vec![1]);
        assert_eq!(c.new, vec![true, false, true, false]);
    }

    #[test]
    fn stored_fills_are_told_apart_from_new_ones_by_account_and_exec_id() {
        let mut other = fill("a.01", 1, 10, Decimal::ONE, 0);
        other.account_id = "DU2".into();
        let fills = vec![fill("a.01", 1, 10, Decimal::ONE, 0), other];
        let stored = vec![stored(1, "a.01", true)];
        let batch = collapse(&fills);
        let s = split(&batch, &stored);
        assert_eq!(s.stored.len(), 1);
        assert_eq!(s.stored[0].1.id, 1);
        assert_eq!(s.new.len(), 1);
        assert_eq!(s.new[0].1.account_id, "DU2");
    }

    #[test]
    fn aggregates_round_half_away_from_zero_and_know_partial_fills() {
        let mut a = fill("a.01", 1, 1, Decimal::new(10_000_000_005, 10), 0);
        a.commission = Some(Decimal::new(35, 2));
        let mut b = fill("b.01", 1, 1, Decimal::ZERO, 3);
        b.cum_quantity = Decimal::from(5);
        // (1.0000000005 + 0) / 2 = 0.50000000025 -> 0.50000000 (8 places, below the midpoint);
        // a midpoint: (1.00000001 + 0) / 2 = 0.500000005 -> 0.50000001
        let agg = aggregate(&[&a, &b]).unwrap();
        assert_eq!(agg.total_quantity, Decimal::from(2));
        assert_eq!(agg.avg_price, Some(Decimal::new(50_000_000, 8)));
        assert_eq!(agg.total_commission, Some(Decimal::new(35, 2)));
        assert_eq!(agg.first_executed_at, Some(a.executed_at));
        assert_eq!(agg.last_executed_at, Some(b.executed_at));
        assert_eq!(agg.status, TradeStatus::Partial);
        a.price = Decimal::new(100_000_001, 8);
        let mid = aggregate(&[&a, &b]).unwrap();
        assert_eq!(mid.avg_price, Some(Decimal::new(50_000_001, 8)));

        let none = aggregate(&[]).unwrap();
        assert_eq!(none.total_quantity, Decimal::ZERO);
        assert_eq!(none.avg_price, None);
        assert_eq!(none.total_commission, None);
        assert_eq!(none.status, TradeStatus::Unknown);
    }

    #[test]
    fn sums_beyond_exact_decimals_are_left_to_the_database() {
        let huge = fill(
            "a.01",
            1,
            1_000_000_000_000_000,
            Decimal::from(10_i64.pow(15)),
            0,
        );
        assert_eq!(aggregate(&[&huge]), None);
    }

    #[test]
    fn a_new_parent_takes_the_earliest_fill_and_only_canonical_ones_count() {
        let mut late = fill("a.01", 7, 10, Decimal::from(2), 9);
        late.exchange = "ARCA".into();
        let early = fill("b.01", 7, 30, Decimal::from(4), 1);
        let superseded = fill("b.00", 7, 99, Decimal::from(99), 0);
        let found_elsewhere = fill("c.01", 8, 1, Decimal::ONE, 0);
        let needs: Vec<(Positioned<'_>, AccountKey, bool)> = [
            (0, &late, true),
            (1, &early, true),
            (2, &superseded, false),
            (3, &found_elsewhere, true),
        ]
        .into_iter()
        .map(|(ord, f, c)| ((ord, f), account_key(f), c))
        .collect();
        let found = HashMap::from([(account_key(&found_elsewhere), 42)]);
        let parents = new_parents(&needs, &found);
        assert_eq!(parents.len(), 1);
        let p = &parents[0];
        assert_eq!(p.key, ("DU1".to_string(), ParentKey::PermId(7)));
        // the superseded fill is the earliest of all, so it names the parent's attributes
        assert_eq!(p.first.0, 2);
        let agg = p.aggregates.as_ref().unwrap();
        assert_eq!(agg.total_quantity, Decimal::from(40));
        assert_eq!(agg.avg_price, Some(Decimal::new(350_000_000, 8)));
        assert_eq!(agg.first_executed_at, Some(early.executed_at));
        assert_eq!(
            trade_date(&p.key.1, p.first.1, Some(agg)),
            early.executed_at.date_naive()
        );
    }
}
