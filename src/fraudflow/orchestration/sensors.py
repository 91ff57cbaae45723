"""A sensor for the day's landing file whose failure says where it looked."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout


class LandingFileSensor(BaseSensorOperator):
    """Waits for one ``.parquet`` or ``.csv`` file in the landing folder of ``day``.

    Returns (as XCom) the file's path once it has settled (``FRAUDFLOW_LANDING_SETTLE_SECONDS``
    unchanged, or a ``<name>.done`` marker beside it). On timeout the error names the folder, so
    an on-call engineer knows which upstream drop is late without reading code.
    """

    template_fields = ("day",)

    def __init__(self, *, day: str = "{{ ds }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day

    def _folder(self):
        from fraudflow.ingestion.landing import landing_folder
        from fraudflow.settings import get_settings

        return landing_folder(get_settings(), dt.date.fromisoformat(self.day))

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from fraudflow.ingestion.landing import find_landing_file, landing_file_settled
        from fraudflow.settings import get_settings

        settings = get_settings()
        found = find_landing_file(settings, dt.date.fromisoformat(self.day))
        if found is None:
            self.log.info("No landing file yet in %s", self._folder())
            return False
        settled, why = landing_file_settled(found, settings.landing_settle)
        self.log.info("%s: %s", found, why)
        return PokeReturnValue(is_done=True, xcom_value=str(found)) if settled else False

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"No landing file for {self.day} after {self.timeout:.0f}s: expected one .parquet or .csv "
                f"file in {self._folder()}"
            ) from exc
