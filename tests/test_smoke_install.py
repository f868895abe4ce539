def test_template_installs(conn):
    row = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
    assert row == (0,)
