"""The gateway's HTTP server side: uvicorn's httptools protocol with bounds on what one client
can hold (head size, head and idle timeouts, open connections), and the file-descriptor budget
those bounds are sized against."""
