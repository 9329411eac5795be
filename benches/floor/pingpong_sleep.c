// The floor of a cross-process round trip on this machine: a 64-byte ping-pong over a
// socketpair whose reader blocks in read(2). Build: gcc -O2 pingpong_sleep.c
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
int main(int argc,char**argv){int sv[2];socketpair(AF_UNIX,SOCK_STREAM,0,sv);char buf[64]={0};int n=20000;
 if(fork()==0){close(sv[0]);for(;;){if(read(sv[1],buf,64)<=0)_exit(0);write(sv[1],buf,64);}}
 close(sv[1]);double t0=now();for(int i=0;i<n;i++){write(sv[0],buf,64);read(sv[0],buf,64);}double t=now()-t0;
 printf("raw socketpair RTT: %.1f us\n",t/n);close(sv[0]);wait(0);}
