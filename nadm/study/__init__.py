"""The paper's user study (Sec. IV-D2, Fig. 11, Appendix) as a small web service around one SQLite database.

- `db`: the schema and how every connection is opened (WAL, synchronous=FULL, foreign keys).
- `design`: clip folders + sidecars -> matched pairs -> a new study database (`nadm study create`).
- `sessions`: participants (token, assigned pairs, order, sides, attention checks) and their answers.
- `server`: the FastAPI app participants and the admin see (`nadm study serve`).
- `report`: preference rates, Wilson intervals, binomial tests and the Fig. 11 chart (`nadm study report`).
- `export`: one CSV row per answer (`nadm study export`).

docs/study.md states the schema, the randomisation, the attention-check rule and the statistics.
"""
