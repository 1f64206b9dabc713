//! The registry is process-wide, so each test names its own actors and series.

use super::*;

fn lines_with(text: &str, needle: &str) -> Vec<String> {
    text.lines().filter(|l| l.contains(needle)).map(String::from).collect()
}

#[test]
fn handled_messages_count_and_fill_the_histogram() {
    handle("t-handled", || ());
    handle("t-handled", || ());
    let text = render();
    assert!(text.contains("flotilla_actor_messages_total{actor=\"t-handled\"} 2\n"));
    assert!(text.contains("flotilla_actor_messages_failed_total{actor=\"t-handled\"} 0\n"));
    assert!(text.contains("flotilla_actor_handling_seconds_count{actor=\"t-handled\"} 2\n"));
    assert!(text.contains("flotilla_actor_handling_seconds_bucket{actor=\"t-handled\",le=\"+Inf\"} 2\n"));
    assert_eq!(lines_with(&text, "# TYPE flotilla_actor_handling_seconds histogram").len(), 1);
}

#[test]
fn a_panicking_handler_counts_as_failed_and_still_panics() {
    let r = std::panic::catch_unwind(|| handle("t-panics", || panic!("boom")));
    assert!(r.is_err());
    let _: Result<(), &str> = handle_result("t-panics", || Err("no"));
    let text = render();
    assert!(text.contains("flotilla_actor_messages_total{actor=\"t-panics\"} 2\n"));
    assert!(text.contains("flotilla_actor_messages_failed_total{actor=\"t-panics\"} 2\n"));
}

#[test]
fn stamped_messages_count_in_the_mailbox_until_taken() {
    let a = Stamped::stamp(Some("t-mailbox"), 1);
    let b = Stamped::stamp(Some("t-mailbox"), 2);
    assert!(render().contains("flotilla_actor_mailbox_depth{actor=\"t-mailbox\"} 2\n"));
    assert_eq!(a.take(), 1);
    drop(b);
    let text = render();
    assert!(text.contains("flotilla_actor_mailbox_depth{actor=\"t-mailbox\"} 0\n"));
    assert!(text.contains("flotilla_actor_mailbox_seconds_count{actor=\"t-mailbox\"} 1\n"));
    // Unstamped actors render no mailbox histogram.
    handle("t-unstamped", || ());
    assert!(!render().contains("flotilla_actor_mailbox_seconds_count{actor=\"t-unstamped\"}"));
}

#[test]
fn families_render_with_help_type_and_labels() {
    inc("t_requests_total", "Requests.", labels(&[("verb", "GET"), ("code", "200")]), 1.0);
    inc("t_requests_total", "Requests.", labels(&[("verb", "GET"), ("code", "200")]), 2.0);
    gauge("t_index", "Index.", String::new(), 7.0);
    observe("t_latency_seconds", "Latency.", &[0.1], labels(&[("verb", "LIST")]), 0.05);
    let text = render();
    assert!(text.contains("# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\nt_requests_total{verb=\"GET\",code=\"200\"} 3\n"));
    assert!(text.contains("# TYPE t_index gauge\nt_index 7\n"));
    assert!(text.contains("t_latency_seconds_bucket{verb=\"LIST\",le=\"0.1\"} 1\n"));
    assert!(text.contains("t_latency_seconds_count{verb=\"LIST\"} 1\n"));
}

#[test]
fn a_family_keeps_its_first_kind() {
    inc("t_mixed", "Mixed.", String::new(), 1.0);
    gauge("t_mixed", "Mixed.", String::new(), 9.0);
    assert!(render().contains("t_mixed 1\n"));
}

#[test]
fn an_instance_is_counted_beside_its_type() {
    handle_in("t-instance", "node-a", || ());
    handle_in("t-instance", "node-a", || ());
    handle_in("t-instance", "node-b", || ());
    let rows: Vec<_> = actor_stats().into_iter().filter(|s| s.actor == "t-instance").map(|s| (s.instance, s.handled)).collect();
    assert_eq!(rows, vec![(None, 3), (Some("node-a".to_string()), 2), (Some("node-b".to_string()), 1)]);
}
