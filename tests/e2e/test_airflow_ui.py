"""`make airflow` and the Airflow UI in a real browser (issue 6, item 6).

Starts Airflow once for the module, as `make airflow` does (`flashfeed airflow-ui`, everything
on 127.0.0.1), on a fresh SQLite home and a free port, and waits until the UI lists the DAGs:
0. every socket its processes listen on is on loopback;
then opens the UI in headless Chromium (Debian's chromium + chromedriver, see .ci/run) and does
what a person does:
1. finds both pipeline DAGs in the DAG list;
2. opens flashfeed_rollback, clicks Trigger and types a wrong target_version: the form refuses
   it with a message and no run is created;
3. triggers it again with a valid target_version, an older version that the test served before
   in a real DynamoDB (dynalite), waits for the run to succeed, checks that the older version is
   served again, and saves a screenshot of the finished run's graph;
4. last, SIGTERM stops Airflow cleanly (exit code 0, its port closed).

Screenshots go to the test's tmp_path and to test-output/airflow-ui/ (git-ignored).
"""
from __future__ import annotations

import shutil
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.conftest import LOOPBACK_HEX, config_with_table_prefix, free_port, listening_ports
from tests.e2e.helpers import REPO, api_get, e2e_env, process_tree, start_airflow, tail

ARTIFACTS = REPO / "test-output" / "airflow-ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900")

PIPELINE_DAGS = ("flashfeed_daily_model", "flashfeed_launch_feeds")
DAG_ID = "flashfeed_rollback"
SERVED_BEFORE = "20261121t1100"     # served first ...
SERVED_NOW = "20261122t1100"        # ... then this one: the rollback serves SERVED_BEFORE again
WRONG_TARGET = "yesterday"          # violates the param's YYYYMMDDtHHMM pattern

RUN_TIMEOUT_S = 150
UI_TIMEOUT_S = 30
POLL_S = 2
MIN_SCREENSHOT_BYTES = 20 * 1024    # a blank or error page is a few KB; the graph is far more


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served_versions(tmp_path_factory, dynamodb_endpoint) -> dict[str, str]:
    """A real DynamoDB where SERVED_NOW is served and SERVED_BEFORE was served before it.

    The tables are empty but marked loaded: rollback and retention only read the control item
    and check that the target's table exists. Own table prefix, so other tests are untouched.
    """
    from flashfeed.serving import control, tables

    prefix = f"ui{uuid.uuid4().hex[:8]}-"
    config = config_with_table_prefix(tmp_path_factory.mktemp("ui-config"), prefix)

    client = tables.dynamodb_client(dynamodb_endpoint)
    expected = None
    for version in (SERVED_BEFORE, SERVED_NOW):
        tables.ensure_feeds_table(client, tables.feeds_table(version, prefix))
        control.mark_loaded(client, prefix, version, written=0, manifest_uri=f"memory://{version}/_manifest.json")
        control.flip(client, prefix, version, f"memory://{version}/_manifest.json", expected_version=expected)
        expected = version
    assert control.served_version(client, prefix)["previous"] == SERVED_BEFORE
    return {"endpoint": dynamodb_endpoint, "prefix": prefix, "config": str(config)}


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory, served_versions):
    """`flashfeed airflow-ui` on a free 127.0.0.1 port, for every test of this module. The last
    test stops it (and checks that it stops cleanly); stopped by its own PID at the end anyway."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    port = free_port()
    env = e2e_env(home, AIRFLOW__API__PORT=str(port),   # project_env derives the execution API URL
                  FLASHFEED_DYNAMODB_ENDPOINT=served_versions["endpoint"], FLASHFEED_CONFIG=served_versions["config"])
    airflow = start_airflow(env, home / "airflow-ui.log", {*PIPELINE_DAGS, DAG_ID})
    try:
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture
def airflow_url(airflow_ui) -> str:
    assert airflow_ui.returncode is None, "the module's Airflow was stopped already"
    return airflow_ui.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by Debian's chromedriver (no driver or browser download)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("needs Debian's chromium and chromium-driver: `make test` installs them "
                    "(`make browser`), or apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in BROWSER_ARGS:
        options.add_argument(argument)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER), log_output=str(log)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers ----------------------------------------------------------------------------------

def _runs(url: str) -> dict[str, dict]:
    return {run["dag_run_id"]: run for run in api_get(url, f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]}


def _wait(browser, condition, what: str, timeout: float = UI_TIMEOUT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.5).until(condition, message=what)


def _trigger_dialog(browser):
    """The trigger form's modal (other dialogs, e.g. popovers, have no such title)."""
    from selenium.webdriver.common.by import By

    for dialog in browser.find_elements(By.CSS_SELECTOR, "[role='dialog']"):
        if dialog.is_displayed() and f"Trigger Dag - {DAG_ID}" in dialog.text:
            return dialog
    return None


def _submit_trigger_form(browser, url: str, target_version: str) -> None:
    """Open the DAG's page, click Trigger, type target_version, click the form's Trigger."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{url}/dags/{DAG_ID}")
    _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"),
          "the DAG page's Trigger button").click()
    field = _wait(browser, lambda b: b.find_element(By.ID, "element_target_version"),
                  "the target_version field of the trigger form")
    field.send_keys(Keys.CONTROL, "a")   # the form may remember an earlier value
    field.send_keys(Keys.DELETE)
    field.send_keys(target_version)
    dialog = _trigger_dialog(browser)
    assert dialog is not None and "Version to serve again" in dialog.text, "the param's description is not shown"
    _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "button[data-testid='trigger-dag-submit']").is_enabled()
          and b.find_element(By.CSS_SELECTOR, "button[data-testid='trigger-dag-submit']"),
          "an enabled submit button").click()


def _save_screenshot(browser, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert browser.save_screenshot(str(shot)), f"no screenshot {shot}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shot, ARTIFACTS / name)
    return shot


# --- tests ------------------------------------------------------------------------------------

def test_ui_listens_on_loopback_only(airflow_ui):
    """Every socket that Airflow's processes listen on (api-server, scheduler, dag-processor,
    triggerer and what they started) is on loopback. (Only Airflow's: the machine is shared.)"""
    opened: dict[int, set[str]] = {}
    for pid in process_tree(airflow_ui.proc.pid):
        try:
            for port, addresses in listening_ports(pid).items():
                opened.setdefault(port, set()).update(addresses)
        except OSError:   # ended meanwhile
            continue
    assert airflow_ui.port in opened
    assert all(addrs <= LOOPBACK_HEX for addrs in opened.values()), f"listening beyond loopback: {opened}"


def test_dag_list_shows_both_pipeline_dags(airflow_url, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{airflow_url}/dags")
    for dag_id in PIPELINE_DAGS:
        link = _wait(browser, lambda b, d=dag_id: b.find_element(By.CSS_SELECTOR, f"a[href$='/dags/{d}']"),
                     f"a link to {dag_id} in the DAG list")
        assert link.text.strip() == dag_id


def test_trigger_form_refuses_a_wrong_param_and_creates_no_run(airflow_url, browser, tmp_path):
    before = set(_runs(airflow_url))
    _submit_trigger_form(browser, airflow_url, WRONG_TARGET)
    refusal = _wait(browser, lambda b: (d := _trigger_dialog(b)) and "Invalid input for param target_version" in d.text
                    and d.text, "the form's refusal of the wrong target_version")
    assert WRONG_TARGET in refusal
    _save_screenshot(browser, tmp_path, "flashfeed_rollback-refused-param.png")
    time.sleep(POLL_S)   # a run created anyway would show up in the API by now
    assert set(_runs(airflow_url)) == before, "a refused trigger created a run"


def test_triggered_run_succeeds_and_its_graph_is_saved(airflow_url, browser, served_versions, tmp_path):
    from selenium.webdriver.common.by import By

    from flashfeed.serving import control, tables

    before = set(_runs(airflow_url))
    _submit_trigger_form(browser, airflow_url, SERVED_BEFORE)
    _wait(browser, lambda b: set(_runs(airflow_url)) - before, "a new run after submitting the form")
    (run_id,) = set(_runs(airflow_url)) - before
    assert _runs(airflow_url)[run_id]["conf"] == {"target_version": SERVED_BEFORE}

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := _runs(airflow_url)[run_id]["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {RUN_TIMEOUT_S}s"
        time.sleep(POLL_S)
    quoted = urllib.parse.quote(run_id, safe="")
    tasks = {t["task_id"]: t["state"]
             for t in api_get(airflow_url, f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances")["task_instances"]}
    assert state == "success", f"run {run_id} {state}: {tasks}"
    served = control.served_version(tables.dynamodb_client(served_versions["endpoint"]), served_versions["prefix"])
    assert (served["version"], served["previous"]) == (SERVED_BEFORE, SERVED_NOW)

    # The run's page in the graph view (the UI keeps the chosen view in localStorage).
    browser.get(f"{airflow_url}/dags/{DAG_ID}/runs/{quoted}")
    browser.execute_script("window.localStorage.setItem('default_dag_view', JSON.stringify('graph'))")
    browser.refresh()
    nodes = _wait(browser, lambda b: (n := b.find_elements(By.CSS_SELECTOR, ".react-flow__node")) and
                  len(n) == len(tasks) and all("success" in node.text for node in n) and n,
                  "every task of the run in the graph, marked success")
    assert {node.text.split("\n")[0] for node in nodes} == set(tasks)
    shot = _save_screenshot(browser, tmp_path, "flashfeed_rollback-run-graph.png")
    assert shot.stat().st_size > MIN_SCREENSHOT_BYTES, f"{shot} is only {shot.stat().st_size} bytes"
    assert (ARTIFACTS / shot.name).stat().st_size == shot.stat().st_size


def test_ui_stops_on_sigterm(airflow_ui):
    """Last (it stops the module's Airflow): SIGTERM stops every component, exit code 0, and the
    UI's port is closed."""
    code = airflow_ui.stop()
    assert code == 0, f"flashfeed airflow-ui exited {code}:\n{tail(airflow_ui.log)}"
    time.sleep(1)
    assert airflow_ui.port not in listening_ports()
