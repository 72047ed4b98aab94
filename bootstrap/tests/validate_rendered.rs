//! `lab-bootstrap validate` refuses a lab whose rendered lb.toml lab-lb would refuse, naming
//! the lab.toml key the problem comes from.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::workspace;
use toml_edit::{value, DocumentMut};

const VALIDATE: Checker<'static> = Checker {
    bin: env!("CARGO_BIN_EXE_lab-bootstrap"),
    subcommand: "validate",
};

/// Applies `edit` to the example and expects `validate` to refuse it naming `expected`.
fn refused(edit: impl FnOnce(&mut DocumentMut), expected: &[&str]) {
    let mut lab = workspace::config_document("lab.toml");
    edit(&mut lab);
    config_check::document_refused_with(VALIDATE, "lab.toml", &lab, expected);
}

#[test]
fn a_health_check_interval_of_zero_is_refused() {
    refused(
        |lab| lab["lb"]["route"][1]["health_check"]["interval"] = value("0s"),
        &[
            "key `lb.route[1].health_check.interval`: must be longer than 0s",
            "backend[1].health_check.interval",
        ],
    );
}

#[test]
fn a_health_check_timeout_longer_than_its_interval_is_refused() {
    refused(
        |lab| {
            let check = &mut lab["lb"]["route"][2]["health_check"];
            check["interval"] = value("1s");
            check["timeout"] = value("2s");
        },
        &["key `lb.route[2].health_check.timeout`: must be longer than 0s and at most the interval (1s)"],
    );
}

#[test]
fn an_https_route_without_a_certificate_is_refused() {
    refused(
        |lab| lab["lb"]["route"][3]["mode"] = value("https"),
        &["key `lb.route[3].mode`: mode = \"https\" needs at least one [[listener.http.cert]]"],
    );
}
