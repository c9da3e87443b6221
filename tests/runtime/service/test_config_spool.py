"""The config file's checks and the spool's durability rules, without a network."""

from __future__ import annotations

import json

import pytest

from limbseg_rt.runtime.service.config import ConfigError, load_config
from limbseg_rt.runtime.service.deliver import next_delay
from limbseg_rt.runtime.service.spool import Spool, SpoolFull, series_key, valid_uid

GOOD = """
[node]
ae_title = "LIMBSEG"
port = 11112
allowed_calling_ae = ["MRI1", "MRI2"]
allowed_addresses = ["192.168.10.0/24", "127.0.0.1"]

[spool]
folder = "spool"
quota_mb = 100
stable_seconds = 5

[model]
model = "unet"
provider = "cpu"

[delivery]
max_attempts = 3
backoff_seconds = 2

[[destination]]
name = "pacs"
host = "10.0.0.5"
port = 104
ae_title = "PACS"
"""


def _write(tmp_path, text):
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_a_good_config_loads_with_paths_relative_to_the_file(tmp_path):
    c = load_config(_write(tmp_path, GOOD))
    assert c.spool == tmp_path / "spool" and c.quota_bytes == 100 * 1024 * 1024 and c.stable_seconds == 5.0
    assert c.allowed_calling_ae == ("MRI1", "MRI2") and c.destinations[0].ae_title == "PACS"
    assert c.address_allowed("192.168.10.77") and c.address_allowed("127.0.0.1")
    assert not c.address_allowed("192.168.11.1") and not c.address_allowed("not-an-ip")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("stable_seconds = 5", "stable_secnds = 5"), "unknown setting(s): stable_secnds"),
        (('allowed_calling_ae = ["MRI1", "MRI2"]', "allowed_calling_ae = []"), "allowed_calling_ae is empty"),
        (('ae_title = "LIMBSEG"', 'ae_title = "A_TITLE_FAR_TOO_LONG"'), "is not a DICOM AE title"),
        (("port = 11112", "port = 70000"), "is not a TCP port"),
        (("port = 11112", 'port = "11112"'), "port must be int"),
        (('"127.0.0.1"]', '"localhost"]'), "is not an IP address or network"),
        (('provider = "cpu"', 'provider = "gpu"'), "provider 'gpu' is not one of"),
        (("quota_mb = 100", "quota_mb = 0"), "quota_mb must be > 0"),
        (("[[destination]]", '[tls]\ncert = "nope.pem"\nkey = "nope.key"\n[[destination]]'), "[tls] cert file"),
        (
            (
                'ae_title = "PACS"',
                'ae_title = "PACS"\n[[destination]]\nname = "pacs"\nhost = "h"\nport = 1\nae_title = "X"',
            ),
            "must be unique",
        ),
        (("[node]", "[node\n"), "is not valid TOML"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD.replace(*edit, 1)))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_uids_and_keys():
    assert valid_uid("1.2.840.10008.5.1.4.1.1.4") and not valid_uid("../etc") and not valid_uid("1." * 40)
    k = series_key("1.2.3", "ab" * 32, {"precision": "int8"})
    assert k == series_key("1.2.3", "ab" * 32, {"precision": "int8"})
    assert (
        k
        != series_key("1.2.3", "cd" * 32, {"precision": "int8"})
        != series_key("1.2.3", "ab" * 32, {"precision": "fp32"})
    )


def test_backoff_doubles_up_to_the_cap():
    assert [next_delay(n, 5, 60) for n in (1, 2, 3, 4, 5, 9)] == [5, 10, 20, 40, 60, 60]


def test_spool_writes_instances_and_state_and_refuses_past_the_quota(tmp_path):
    spool = Spool(tmp_path / "s", quota_bytes=20_000)
    st = spool.store_instance("1.2.3", "1.2", "1.2.3.1", b"x" * 6000, "MRI1")
    assert st.instances == 1 and (tmp_path / "s/incoming/1.2.3/1.2.3.1.dcm").read_bytes() == b"x" * 6000
    state = json.loads((tmp_path / "s/incoming/1.2.3/series.json").read_text())
    assert state["instances"] == 1 and state["calling_ae"] == "MRI1"
    t1 = state["last_received"]
    st = spool.store_instance("1.2.3", "1.2", "1.2.3.1", b"y" * 6000, "MRI1")  # resent: replaced, clock restarted
    assert (
        st.instances == 1
        and st.last_received >= t1
        and spool.used_bytes == 6000 + (tmp_path / "s/incoming/1.2.3/series.json").stat().st_size
    )
    with pytest.raises(SpoolFull):
        spool.store_instance("1.2.3", "1.2", "1.2.3.2", b"z" * 15000, "MRI1")
    assert not (tmp_path / "s/incoming/1.2.3/1.2.3.2.dcm").exists()
    # A restarted spool counts what is on disk and drops temporary files a killed node left.
    (tmp_path / "s/incoming/1.2.3/.1.2.3.9.dcm.abcd.tmp").write_bytes(b"partial")
    again = Spool(tmp_path / "s", quota_bytes=20_000)
    assert not list((tmp_path / "s/incoming/1.2.3").glob(".*.tmp"))
    assert [s.series_uid for s in again.pending_series()] == ["1.2.3"]
    assert again.used_bytes == spool.used_bytes
