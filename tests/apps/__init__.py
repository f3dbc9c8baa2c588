"""Small apps that tests run under real servers (gunicorn), configured by environment."""
