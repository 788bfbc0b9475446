//! Read coalescing: as few requests as the protocol allows for a device's tags.
//!
//! Tags of one table whose addresses are close (at most `max_gap` unused addresses between
//! them) share one read, up to the protocol's limit per request (125 registers, 2000 bits).
//! Reading a few unused registers is much cheaper than another round trip.

use super::codec::Table;

/// Where one tag lives: table, first address and how many addresses it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

impl Span {
    /// One past the last address, which may be 65536.
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// One read request and the tags (indexes into the planned spans) it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub tags: Vec<usize>,
}

/// Group `spans` into read requests: per table, in address order, a span joins the current
/// request if the gap before it is at most `max_gap` and the request stays within the table's
/// limit. Every span must fit one request on its own (the configuration check ensures it).
///
/// Taking spans in start order and extending greedily gives the fewest requests: a request that
/// ends at the farthest possible span leaves the least for the others.
pub fn plan_reads(spans: &[Span], max_gap: u16) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].table, spans[i].start, spans[i].count));
    let mut requests: Vec<ReadRequest> = Vec::new();
    let mut current_end = 0u32;
    for i in order {
        let span = spans[i];
        if let Some(request) = requests.last_mut() {
            let start = u32::from(request.start);
            let end = current_end.max(span.end());
            let gap = u32::from(span.start).saturating_sub(current_end);
            if request.table == span.table
                && gap <= u32::from(max_gap)
                && end - start <= u32::from(span.table.max_read())
            {
                current_end = end;
                request.count = (end - start) as u16;
                request.tags.push(i);
                continue;
            }
        }
        current_end = span.end();
        requests.push(ReadRequest {
            table: span.table,
            start: span.start,
            count: span.count,
            tags: vec![i],
        });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(table: Table, start: u16, count: u16) -> Span {
        Span {
            table,
            start,
            count,
        }
    }

    fn shape(requests: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        requests
            .iter()
            .map(|r| (r.table, r.start, r.count))
            .collect()
    }

    #[test]
    fn neighbours_merge_within_the_gap_and_tables_stay_apart() {
        let spans = [
            span(Table::Holding, 9, 2),
            span(Table::Holding, 0, 1),
            span(Table::Holding, 14, 4),
            span(Table::Holding, 40, 1),
            span(Table::Input, 0, 2),
            span(Table::Coil, 3, 1),
            span(Table::Coil, 0, 1),
        ];
        let plan = plan_reads(&spans, 8);
        assert_eq!(
            shape(&plan),
            vec![
                (Table::Coil, 0, 4),
                (Table::Input, 0, 2),
                (Table::Holding, 0, 18),
                (Table::Holding, 40, 1),
            ]
        );
        assert_eq!(plan[2].tags, vec![1, 0, 2]);
        // No gap allowed: only touching spans merge.
        assert_eq!(plan_reads(&spans, 0).len(), 7);
    }

    #[test]
    fn requests_respect_the_protocol_limits() {
        let registers: Vec<Span> = (0..1000).map(|i| span(Table::Holding, i, 1)).collect();
        let plan = plan_reads(&registers, 8);
        assert_eq!(plan.len(), 8, "1000 registers in reads of at most 125");
        assert!(plan.iter().all(|r| r.count <= 125));
        assert_eq!(plan.iter().map(|r| r.tags.len()).sum::<usize>(), 1000);

        let bits: Vec<Span> = (0..4001).map(|i| span(Table::Discrete, i, 1)).collect();
        let plan = plan_reads(&bits, 8);
        assert_eq!(shape(&plan)[2], (Table::Discrete, 4000, 1));
        assert_eq!(plan.len(), 3);

        // A 4-register value never straddles two requests.
        let floats: Vec<Span> = (0..40).map(|i| span(Table::Input, i * 4, 4)).collect();
        let plan = plan_reads(&floats, 0);
        assert_eq!(
            shape(&plan),
            vec![(Table::Input, 0, 124), (Table::Input, 124, 36)]
        );
    }

    #[test]
    fn overlapping_tags_and_the_top_of_the_address_space() {
        let spans = [
            span(Table::Holding, 0, 4),
            span(Table::Holding, 2, 1),
            span(Table::Holding, 65534, 2),
        ];
        assert_eq!(
            shape(&plan_reads(&spans, 8)),
            vec![(Table::Holding, 0, 4), (Table::Holding, 65534, 2)]
        );
        assert!(plan_reads(&[], 8).is_empty());
    }
}
