//! The list's growth, day by day: the dashboard's chart.
//!
//! The list is the confirmed subscribers. Counting it at the end of each
//! of the last days would read every row once per day; instead the store
//! counts, per day, who confirmed and who unsubscribed after confirming,
//! and the sizes are walked back from today's. Bounced addresses are left
//! out of both (a bounce has no date), so they are never on the line.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How far back the chart goes.
pub const GROWTH_DAYS: u32 = 90;

/// Confirmations and unsubscribes on each day of the window, day 0 the
/// oldest; from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyChanges {
    /// `(day, count)`, days counted from the window's start.
    pub joined: Vec<(i64, i64)>,
    pub left: Vec<(i64, i64)>,
}

/// One day of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowthDay {
    /// Midnight starting the day, in the schedule's zone.
    pub start: DateTime<Tz>,
    pub joined: i64,
    pub left: i64,
    /// Confirmed subscribers at the end of the day.
    pub size: i64,
}

/// Midnight `GROWTH_DAYS - 1` days before today, in `zone`: the chart's
/// first day. Days are counted as 24 hours from there, so after a change
/// of clocks a day's edge is an hour off, which a daily chart does not show.
pub fn window_start(now: DateTime<Utc>, zone: Tz) -> DateTime<Tz> {
    let today = now.with_timezone(&zone).date_naive();
    let first = today - Days::new(u64::from(GROWTH_DAYS - 1));
    let midnight = first.and_time(NaiveTime::MIN);
    // A zone that skips midnight on that day starts it an hour later.
    zone.from_local_datetime(&midnight)
        .earliest()
        .unwrap_or_else(|| zone.from_utc_datetime(&midnight))
}

/// The chart's days, oldest first, ending with today at `confirmed_now`.
pub fn growth(start: DateTime<Tz>, changes: &DailyChanges, confirmed_now: i64) -> Vec<GrowthDay> {
    let days = GROWTH_DAYS as usize;
    let mut joined = vec![0; days];
    let mut left = vec![0; days];
    for (series, counts) in [(&mut joined, &changes.joined), (&mut left, &changes.left)] {
        for &(day, count) in counts {
            if let Some(slot) = usize::try_from(day)
                .ok()
                .and_then(|day| series.get_mut(day))
            {
                *slot += count;
            }
        }
    }
    let mut size = confirmed_now;
    let mut result = Vec::with_capacity(days);
    for day in (0..days).rev() {
        result.push(GrowthDay {
            start: start + chrono::Duration::days(day as i64),
            joined: joined[day],
            left: left[day],
            size: size.max(0),
        });
        size = size - joined[day] + left[day];
    }
    result.reverse();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_window_starts_at_local_midnight_eighty_nine_days_back() {
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        let start = window_start(at("2037-06-30T22:30:00Z"), zone);
        // 00:30 on 1 July in Berlin: today is 1 July.
        assert_eq!(start.to_rfc3339(), "2037-04-03T00:00:00+02:00");
    }

    #[test]
    fn sizes_walk_back_from_today() {
        let zone: Tz = "UTC".parse().unwrap();
        let start = window_start(at("2037-06-30T12:00:00Z"), zone);
        let changes = DailyChanges {
            joined: vec![(0, 5), (88, 3), (89, 2)],
            left: vec![(89, 1), (50, 4)],
        };
        let days = growth(start, &changes, 100);
        assert_eq!(days.len(), 90);
        let today = days[89];
        assert_eq!((today.joined, today.left, today.size), (2, 1, 100));
        assert_eq!(days[88].size, 99, "yesterday: before +2 -1");
        assert_eq!(days[87].size, 96, "before the 3 of day 88");
        assert_eq!(days[49].size, 96 + 4, "before the 4 who left on day 50");
        assert_eq!(days[0].size, 100, "day 0's 5 are in it");
        assert_eq!(days[0].start, start);
    }

    #[test]
    fn counts_outside_the_window_are_ignored() {
        let zone: Tz = "UTC".parse().unwrap();
        let start = window_start(at("2037-06-30T12:00:00Z"), zone);
        let changes = DailyChanges {
            joined: vec![(-1, 7), (90, 7)],
            left: vec![],
        };
        let days = growth(start, &changes, 10);
        assert!(days.iter().all(|day| day.size == 10 && day.joined == 0));
    }
}
