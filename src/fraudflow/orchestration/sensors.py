"""A sensor for the day's landing file whose failure says where it looked."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout


class LandingFileSensor(BaseSensorOperator):
    """Waits for one ``.parquet`` or ``.csv`` file in the landing folder of ``day``.

    Returns (as XCom) the file's path. On timeout the error names the folder, so an
    on-call engineer knows which upstream drop is late without reading code.
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
        from fraudflow.ingestion.landing import find_landing_file
        from fraudflow.settings import get_settings

        found = find_landing_file(get_settings(), dt.date.fromisoformat(self.day))
        if found is None:
            self.log.info("No landing file yet in %s", self._folder())
            return False
        return PokeReturnValue(is_done=True, xcom_value=str(found))

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"No landing file for {self.day} after {self.timeout:.0f}s: expected one .parquet or .csv "
                f"file in {self._folder()}"
            ) from exc
