"""Computations on retrieved features that run the same way offline and online.

- `almanac.transforms.ondemand`: on-demand views, computed on the joined training rows
  and on the rows of one request by one plan and one code path.
- `almanac.transforms.fitted`: a feature service's model transforms (scalers, encoders,
  imputers): fitted once on a training set into a plain-JSON artifact, then applied with
  the same bits to a training set of millions of rows and to a request's single row.
- `almanac.transforms.artifacts`: those fits as versioned registry artifacts.

Engine-neutral: Arrow and NumPy only, no SQL engine (docs/transforms.md).
"""
