// A plain TCP relay (listen -> one upstream), in two variants, to compare
// the kernel cost per relayed message of epoll (tokio) and io_uring
// (tokio-uring), single-threaded, one upstream connection per downstream
// one. Usage: relay-floor <epoll|uring> <listen> <upstream>
use std::net::SocketAddr;
use tokio_uring::buf::BoundedBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args[2].parse().unwrap();
    let upstream: SocketAddr = args[3].parse().unwrap();
    match args[1].as_str() {
        "epoll" => epoll(listen, upstream),
        _ => uring(listen, upstream),
    }
}

fn epoll(listen: SocketAddr, upstream: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(listen).await.unwrap();
        loop {
            let (mut down, _) = l.accept().await.unwrap();
            down.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                up.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
}

fn uring(listen: SocketAddr, upstream: SocketAddr) {
    tokio_uring::start(async move {
        let l = tokio_uring::net::TcpListener::bind(listen).unwrap();
        loop {
            let (down, _) = l.accept().await.unwrap();
            down.set_nodelay(true).unwrap();
            tokio_uring::spawn(async move {
                let up = tokio_uring::net::TcpStream::connect(upstream)
                    .await
                    .unwrap();
                up.set_nodelay(true).unwrap();
                let down = std::rc::Rc::new(down);
                let up = std::rc::Rc::new(up);
                let (d1, u1) = (down.clone(), up.clone());
                let a = tokio_uring::spawn(async move { pump(&d1, &u1).await });
                pump(&up, &down).await;
                let _ = a.await;
            });
        }
    });
}

async fn pump(from: &tokio_uring::net::TcpStream, to: &tokio_uring::net::TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let (r, b) = from.read(buf).await;
        buf = b;
        let n = match r {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (r, b) = to.write_all(buf.slice(..n)).await;
        buf = b.into_inner();
        if r.is_err() {
            return;
        }
    }
}
