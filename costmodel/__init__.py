"""Pure-Python analytic cost model of attention variants. Never imports torch."""
