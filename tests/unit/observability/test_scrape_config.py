"""deploy/prometheus.yml scrapes every service of the platform, at its metrics port."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventshop.services import METRICS_PORTS

CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "prometheus.yml"


def test_every_service_is_scraped_at_its_port() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {group["labels"]["service"]: group["targets"] for group in job["static_configs"]}
    assert targets == {name: [f"127.0.0.1:{port}"] for name, port in METRICS_PORTS.items()}
