"""Arrow-batched (pandas) UDFs for text work the JVM's SQL functions cannot do.

No ``from __future__ import annotations`` here: ``pandas_udf`` reads the real
``pd.Series`` type hints to pick the vectorized evaluation type.
"""

import pandas as pd
from pyspark.sql.functions import pandas_udf

__all__ = ["nfkc"]


@pandas_udf("string")
def nfkc(text: pd.Series) -> pd.Series:
    """Unicode NFKC over a whole Arrow batch (folds full-width forms: Ｓｐａｒｋ → Spark)."""
    return text.str.normalize("NFKC")
