//! Jobs and CronJobs run to the end a Kubernetes user expects, driven by the real kubectl:
//! completions and parallelism, the backoff limit, Indexed mode, the active deadline,
//! suspend, ttlSecondsAfterFinished; CronJobs on their schedule with concurrencyPolicy
//! Forbid holding, and `kubectl create job --from=cronjob/…`.

mod common;

use common::cluster::Cluster;
use std::collections::BTreeSet;
use std::time::Duration;

/// `kubectl create job` as YAML, with `extra` lines added to the Job's spec.
fn job_yaml(c: &Cluster, name: &str, script: &str, extra: &str) -> String {
    let y = c.ok(&["create", "job", name, "--image=busybox", "--dry-run=client", "-o", "yaml", "--", "sh", "-c", script]);
    let at = y.find("\nspec:\n").expect("a spec") + "\nspec:\n".len();
    format!("{}{extra}{}", &y[..at], &y[at..])
}

fn jsonpath(c: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &p]);
    c.ok(&args)
}

#[test]
fn jobs_complete_fail_and_index_their_pods() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    let wait = Duration::from_secs(90);

    // The plain one: kubectl create job, kubectl wait, kubectl logs.
    assert_eq!(c.ok(&["create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo done"]).trim(), "job.batch/hello created");
    let waited = c.ok(&["wait", "--for=condition=complete", "job/hello", "--timeout=90s"]);
    assert_eq!(waited.trim(), "job.batch/hello condition met");
    assert_eq!(c.ok(&["logs", "job/hello"]).trim(), "done");

    // Three completions, two at a time.
    let y = job_yaml(&c, "three", "echo part; sleep 1", "  completions: 3\n  parallelism: 2\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.ok(&["wait", "--for=condition=complete", "job/three", "--timeout=120s"]);
    assert_eq!(jsonpath(&c, &["job", "three"], "{.status.succeeded}"), "3");
    let phases = jsonpath(&c, &["pods", "-l", "batch.kubernetes.io/job-name=three"], "{.items[*].status.phase}");
    assert_eq!(phases.split_whitespace().collect::<Vec<_>>(), vec!["Succeeded"; 3], "{phases}");
    let listed = c.ok(&["get", "job", "three"]);
    assert!(listed.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(2) == Some("3/3")), "{listed}");

    // A failing Job stops at its backoff limit (two failures: the first and one retry).
    let y = job_yaml(&c, "broken", "exit 3", "  backoffLimit: 1\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.ok(&["wait", "--for=condition=failed", "job/broken", "--timeout=120s"]);
    assert_eq!(jsonpath(&c, &["job", "broken"], "{.status.conditions[?(@.type==\"Failed\")].reason}"), "BackoffLimitExceeded");
    assert_eq!(jsonpath(&c, &["job", "broken"], "{.status.failed}"), "2");
    let events = c.ok(&["get", "events", "--field-selector=involvedObject.name=broken", "-o", "jsonpath={.items[*].reason}"]);
    assert_eq!(events.split_whitespace().filter(|r| *r == "BackoffLimitExceeded").count(), 1, "told once: {events}");

    // Indexed: each pod carries its index, in an annotation and in its environment.
    let y = job_yaml(&c, "indexed", "echo index=$JOB_COMPLETION_INDEX", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.ok(&["wait", "--for=condition=complete", "job/indexed", "--timeout=120s"]);
    assert_eq!(jsonpath(&c, &["job", "indexed"], "{.status.completedIndexes}"), "0-2");
    let pods = jsonpath(&c, &["pods", "-l", "batch.kubernetes.io/job-name=indexed"], "{range .items[*]}{.metadata.name} {.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}{\"\\n\"}{end}");
    let mut seen = BTreeSet::new();
    for l in pods.lines() {
        let (name, ix) = l.split_once(' ').unwrap_or_else(|| panic!("{pods}"));
        assert!(name.starts_with(&format!("indexed-{ix}-")), "{name} has index {ix}");
        assert_eq!(c.ok(&["logs", name]).trim(), format!("index={ix}"));
        seen.insert(ix.to_string());
    }
    assert_eq!(seen, ["0", "1", "2"].iter().map(|s| s.to_string()).collect());

    // The active deadline fails a Job that runs too long, and its pod is stopped.
    let y = job_yaml(&c, "slow", "sleep 600", "  activeDeadlineSeconds: 3\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.ok(&["wait", "--for=condition=failed", "job/slow", "--timeout=60s"]);
    assert_eq!(jsonpath(&c, &["job", "slow"], "{.status.conditions[?(@.type==\"Failed\")].reason}"), "DeadlineExceeded");
    c.eventually(wait, "the slow Job's pod stopped", || {
        let phases = jsonpath(&c, &["pods", "-l", "batch.kubernetes.io/job-name=slow"], "{.items[*].status.phase}");
        if phases.split_whitespace().all(|p| p == "Failed" || p == "Succeeded") { Ok(()) } else { Err(phases) }
    });

    // Suspended: no pods until resumed.
    let y = job_yaml(&c, "later", "echo ran", "  suspend: true\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.ok(&["wait", "--for=condition=suspended", "job/later", "--timeout=60s"]);
    assert_eq!(jsonpath(&c, &["pods", "-l", "batch.kubernetes.io/job-name=later"], "{.items[*].metadata.name}"), "");
    c.ok(&["patch", "job", "later", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    c.ok(&["wait", "--for=condition=complete", "job/later", "--timeout=90s"]);

    // ttlSecondsAfterFinished: the finished Job and its pod go away by themselves.
    let y = job_yaml(&c, "brief", "echo bye", "  ttlSecondsAfterFinished: 2\n");
    c.kubectl_stdin(&["create", "-f", "-"], Some(&y));
    c.eventually(wait, "the expired Job and its pods are gone", || {
        let jobs = c.kubectl(&["get", "job", "brief", "-o", "name"]);
        let pods = jsonpath(&c, &["pods", "-l", "batch.kubernetes.io/job-name=brief"], "{.items[*].metadata.name}");
        if !jobs.ok && jobs.stderr.contains("NotFound") && pods.is_empty() { Ok(()) } else { Err(format!("{} {} / {pods}", jobs.stdout, jobs.stderr)) }
    });
}

/// Owners of the Jobs in the namespace, one per Job.
fn job_owners(c: &Cluster) -> Vec<String> {
    jsonpath(c, &["jobs"], "{range .items[*]}{.metadata.ownerReferences[0].name}{\"\\n\"}{end}").lines().map(str::to_string).collect()
}

#[test]
fn cronjobs_run_on_schedule_and_forbid_holds() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 1);
    c.ok(&["create", "cronjob", "tick", "--image=busybox", "--schedule=*/1 * * * *", "--", "sh", "-c", "echo tick"]);
    let forbid = c.ok(&["create", "cronjob", "hold", "--image=busybox", "--schedule=*/1 * * * *", "--dry-run=client", "-o", "yaml", "--", "sleep", "600"]);
    let forbid = forbid.replacen("\nspec:\n", "\nspec:\n  concurrencyPolicy: Forbid\n", 1);
    assert!(c.kubectl_stdin(&["create", "-f", "-"], Some(&forbid)).ok);

    // A Job within 70 s of the CronJob, from each.
    c.eventually(Duration::from_secs(70), "a Job from each CronJob", || {
        let o = job_owners(&c);
        if o.iter().any(|x| x == "tick") && o.iter().any(|x| x == "hold") { Ok(()) } else { Err(format!("{o:?}")) }
    });
    let last = jsonpath(&c, &["cronjob", "tick"], "{.status.lastScheduleTime}");
    assert!(last.ends_with(":00Z"), "scheduled on the minute: {last}");

    // By the next minute tick has run again; hold's first Job still runs, so no second.
    c.eventually(Duration::from_secs(75), "tick's second Job", || {
        let n = job_owners(&c).iter().filter(|x| *x == "tick").count();
        if n >= 2 { Ok(()) } else { Err(format!("{n} Jobs of tick")) }
    });
    c.eventually(Duration::from_secs(30), "Forbid told why it skipped", || {
        let ev = c.ok(&["get", "events", "--field-selector=involvedObject.name=hold", "-o", "jsonpath={.items[*].reason}"]);
        if ev.contains("JobAlreadyActive") { Ok(()) } else { Err(ev) }
    });
    assert_eq!(job_owners(&c).iter().filter(|x| *x == "hold").count(), 1, "Forbid made a second Job while the first ran");
    let active = jsonpath(&c, &["cronjob", "hold"], "{.status.active[*].name}");
    assert!(active.starts_with("hold-"), "hold shows its running Job as active: {active:?}");

    // kubectl create job --from=cronjob/…: a Job from the template, owned by the CronJob.
    assert_eq!(c.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]).trim(), "job.batch/by-hand created");
    c.ok(&["wait", "--for=condition=complete", "job/by-hand", "--timeout=60s"]);
    assert_eq!(jsonpath(&c, &["job", "by-hand"], "{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}"), "manual");
    assert_eq!(c.ok(&["logs", "job/by-hand"]).trim(), "tick");

    // Deleting the CronJob takes its Jobs and their pods with it.
    c.ok(&["delete", "cronjob", "hold"]);
    c.eventually(Duration::from_secs(60), "hold's Jobs and pods are gone", || {
        let left = job_owners(&c).iter().filter(|x| *x == "hold").count();
        let pods = jsonpath(&c, &["pods"], "{.items[*].metadata.name}");
        if left == 0 && !pods.contains("hold-") { Ok(()) } else { Err(format!("{left} jobs; pods {pods}")) }
    });
}
